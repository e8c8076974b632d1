// lamps_paged_attention: attention of query rows over their KV pages, read in place, as an XLA FFI handler. XLA's
// CPU backend can only reach a row's pages by gathering them into a new buffer; this kernel walks each row's page
// table and reads each page where it lies, only as far as the row's context goes.
//
// q [R, Q, N, H] (already scaled), k_pages / v_pages [K, P, S, H], page_table [R, W], q_start [R], context [R]
// -> out [R, Q, N, H]. Query token i of row r sees the KV positions below min(q_start[r] + i + 1, context[r]):
// decode rows have Q = 1, prefill chunks Q tokens. The N = K * G query heads of kv head k are k * G .. k * G + G - 1.
// A query that sees no token gets zeros. Work items are (row, kv head) pairs, taken a few at a time by the threads
// of XLA's intra-op pool (parallel_for.h): the rows of a prompt's chunks see contexts of very different lengths.
// Each item keeps an online softmax per query vector (M = Q * G of them) and folds in a page at a time. Decode rows
// (few query vectors) score a page by one dot product per token; prefill rows transpose the page's keys once and,
// at head dim 64 with pages of 16 on AVX-512, run four query vectors at a time in registers (page_block).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

#if defined(__AVX512F__)
#define LAMPS_AVX512 1
#include <immintrin.h>
#else
#define LAMPS_AVX512 0
#endif

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;  // partial sums per dot product, so that the compiler vectorizes it
// From this many query vectors per (row, kv head) on, a page's keys are transposed once and every query's scores
// run along the page's tokens; fewer (decode rows: the G heads of one token) take one dot product per token.
constexpr int64_t kTransposeFrom = 8;

inline float dot(const float* a, const float* b, int64_t n) {
  float part[kLanes] = {0};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) part[j] += a[i + j] * b[i + j];
  float sum = 0;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int64_t j = 0; j < kLanes; ++j) sum += part[j];
  return sum;
}

// e^x for x <= 0 in arithmetic the compiler vectorizes (a loop of std::exp stays scalar calls, which made prefill
// rows slower than XLA's): x = k ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor polynomial to r^7 (relative error
// below 1e-7), 2^k from the exponent bits. Below -87 (e^x < 2^-125) it returns 0, for NaN NaN.
inline float exp_nonpositive(float x) {
  const float clamped = x >= -87.0f ? x : -87.0f;  // NaN too: no conversion of NaN to an integer below
  const float k = (clamped * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest: 1.5 * 2^23
  const float r = (clamped - k * 0.693359375f) + k * 2.12194440e-4f;    // ln 2 in two parts
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return x >= -87.0f ? p * scale : (x < -87.0f ? 0.0f : x);  // NaN stays NaN
}

struct Shapes {
  int64_t rows, q_len, heads, head_dim, kv_heads, group, pages, page_size, width;
};

// Online-softmax state of one (row, kv head): M = Q * G query vectors in (token, group) order.
struct State {
  std::vector<float> max_score, denom, acc, keys_t, scores;
  State(const Shapes& s)
      : max_score(s.q_len * s.group), denom(s.q_len * s.group), acc(s.q_len * s.group * s.head_dim),
        keys_t(s.head_dim * s.page_size), scores(s.page_size) {}
};

// Folds `visible` tokens of one page into query m's state, given their scores (overwritten by their weights).
template <int64_t kHeadDim>
inline void fold(State& st, int64_t m, float* scores, int64_t visible, const float* v, int64_t head_dim) {
  const int64_t H = kHeadDim ? kHeadDim : head_dim;
  float page_max = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < visible; ++t) page_max = std::max(page_max, scores[t]);
  const float new_max = std::max(st.max_score[m], page_max);
  const float correction = std::exp(st.max_score[m] - new_max);  // 0 on the query's first page
  st.max_score[m] = new_max;
  float page_sum = 0;
  for (int64_t t = 0; t < visible; ++t) page_sum += scores[t] = exp_nonpositive(scores[t] - new_max);
  float* acc = st.acc.data() + m * H;
  for (int64_t h = 0; h < H; ++h) acc[h] *= correction;
  for (int64_t t = 0; t < visible; ++t) {
    const float* vt = v + t * H;
    for (int64_t h = 0; h < H; ++h) acc[h] += scores[t] * vt[h];
  }
  st.denom[m] = st.denom[m] * correction + page_sum;
}

#if LAMPS_AVX512
constexpr int64_t kBlock = 4;  // queries of a page taken together in registers (head dim 64, pages of 16)

// Queries m0 .. m0 + 3 against one page (head dim 64, pages of 16): scores from the page's transposed keys, four
// accumulators side by side; weights; then the PV product with their 4 x 64 outputs held in 16 registers.
void page_block(State& st, const float* const qs[kBlock], const int64_t visible[kBlock], int64_t m0,
                const float* keys_t, const float* v) {
  __m512 scores[kBlock];
  for (int64_t j = 0; j < kBlock; ++j) scores[j] = _mm512_setzero_ps();
  for (int64_t h = 0; h < 64; ++h) {
    const __m512 key = _mm512_loadu_ps(keys_t + h * 16);
    for (int64_t j = 0; j < kBlock; ++j) scores[j] = _mm512_fmadd_ps(_mm512_set1_ps(qs[j][h]), key, scores[j]);
  }
  alignas(64) float weights[kBlock][16];
  float correction[kBlock];
  int64_t tokens = 0;  // the most any of the four sees
  for (int64_t j = 0; j < kBlock; ++j) {
    const int64_t m = m0 + j;
    correction[j] = 1.0f;
    std::fill(weights[j], weights[j] + 16, 0.0f);
    if (visible[j] <= 0) continue;
    tokens = std::max(tokens, visible[j]);
    const __mmask16 seen = static_cast<__mmask16>((1u << visible[j]) - 1);
    const float new_max = std::max(st.max_score[m], _mm512_mask_reduce_max_ps(seen, scores[j]));
    correction[j] = std::exp(st.max_score[m] - new_max);  // 0 on the query's first page
    st.max_score[m] = new_max;
    alignas(64) float raw[16];
    _mm512_store_ps(raw, scores[j]);
    float page_sum = 0;
    for (int64_t t = 0; t < visible[j]; ++t) page_sum += weights[j][t] = exp_nonpositive(raw[t] - new_max);
    st.denom[m] = st.denom[m] * correction[j] + page_sum;
  }
  __m512 acc[kBlock][4];
  for (int64_t j = 0; j < kBlock; ++j)
    for (int64_t c = 0; c < 4; ++c)
      acc[j][c] = _mm512_mul_ps(_mm512_set1_ps(correction[j]), _mm512_loadu_ps(&st.acc[(m0 + j) * 64 + c * 16]));
  for (int64_t t = 0; t < tokens; ++t) {
    const __m512 v0 = _mm512_loadu_ps(v + t * 64), v1 = _mm512_loadu_ps(v + t * 64 + 16);
    const __m512 v2 = _mm512_loadu_ps(v + t * 64 + 32), v3 = _mm512_loadu_ps(v + t * 64 + 48);
    for (int64_t j = 0; j < kBlock; ++j) {
      const __m512 w = _mm512_set1_ps(weights[j][t]);
      acc[j][0] = _mm512_fmadd_ps(w, v0, acc[j][0]);
      acc[j][1] = _mm512_fmadd_ps(w, v1, acc[j][1]);
      acc[j][2] = _mm512_fmadd_ps(w, v2, acc[j][2]);
      acc[j][3] = _mm512_fmadd_ps(w, v3, acc[j][3]);
    }
  }
  for (int64_t j = 0; j < kBlock; ++j)
    for (int64_t c = 0; c < 4; ++c) _mm512_storeu_ps(&st.acc[(m0 + j) * 64 + c * 16], acc[j][c]);
}
#endif

// One (row, kv head). The head dim and page size are template arguments for the common ones (the compiler then
// unrolls the per-page loops and keeps a page's scores in registers), 0 to take the shapes' values.
template <int64_t kHeadDim, int64_t kPageSize>
void attend(const Shapes& s, const float* q, const float* k_pages, const float* v_pages, const int32_t* page_table,
            int32_t q_start, int32_t context, int64_t row, int64_t kv_head, float* out, State& st) {
  const int64_t H = kHeadDim ? kHeadDim : s.head_dim, S = kPageSize ? kPageSize : s.page_size;
  const int64_t Q = s.q_len, G = s.group, M = Q * G;
  auto query = [&](int64_t m) { return ((row * Q + m / G) * s.heads + kv_head * G + m % G) * H; };
  auto limit = [&](int64_t m) { return std::max<int64_t>(0, std::min<int64_t>(q_start + m / G + 1, context)); };
  std::fill(st.max_score.begin(), st.max_score.end(), -std::numeric_limits<float>::infinity());
  std::fill(st.denom.begin(), st.denom.end(), 0.0f);
  std::fill(st.acc.begin(), st.acc.end(), 0.0f);
  const int64_t row_limit = limit(M - 1);  // the last token sees the most
  const int64_t num_pages = (row_limit + S - 1) / S;
  for (int64_t p = 0; p < num_pages; ++p) {
    const int64_t page = page_table[row * s.width + p];
    const float* k = k_pages + ((kv_head * s.pages + page) * S) * H;
    const float* v = v_pages + ((kv_head * s.pages + page) * S) * H;
    if (p + 1 < num_pages) {  // the next page is elsewhere in memory: start fetching it now
      const int64_t next = ((kv_head * s.pages + page_table[row * s.width + p + 1]) * S) * H;
      for (int64_t i = 0; i < S * H; i += 16) {
        __builtin_prefetch(k_pages + next + i);
        __builtin_prefetch(v_pages + next + i);
      }
    }
    const bool transposed = M >= kTransposeFrom;
    if (transposed)
      for (int64_t t = 0; t < S; ++t)
        for (int64_t h = 0; h < H; ++h) st.keys_t[h * S + t] = k[t * H + h];
    int64_t m = 0;
#if LAMPS_AVX512
    if (transposed && H == 64 && S == 16)
      for (; m + kBlock <= M; m += kBlock) {
        const float* qs[kBlock];
        int64_t visible[kBlock];
        for (int64_t j = 0; j < kBlock; ++j) {
          qs[j] = q + query(m + j);
          visible[j] = std::min<int64_t>(S, limit(m + j) - p * S);
        }
        page_block(st, qs, visible, m, st.keys_t.data(), v);
      }
#endif
    for (; m < M; ++m) {
      const int64_t visible = std::min<int64_t>(S, limit(m) - p * S);
      if (visible <= 0) continue;
      const float* qm = q + query(m);
      float* scores = st.scores.data();
      if (transposed) {
        std::fill(scores, scores + S, 0.0f);
        for (int64_t h = 0; h < H; ++h)
          for (int64_t t = 0; t < S; ++t) scores[t] += qm[h] * st.keys_t[h * S + t];
      } else {
        for (int64_t t = 0; t < visible; ++t) scores[t] = dot(qm, k + t * H, H);
      }
      fold<kHeadDim>(st, m, scores, visible, v, H);
    }
  }
  for (int64_t m = 0; m < M; ++m) {
    const float inv = st.denom[m] > 0 ? 1.0f / st.denom[m] : 0.0f;
    float* o = out + query(m);
    for (int64_t h = 0; h < H; ++h) o[h] = st.acc[m * H + h] * inv;
  }
}

ffi::Error PagedAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k_pages,
                          ffi::Buffer<ffi::F32> v_pages, ffi::Buffer<ffi::S32> page_table,
                          ffi::Buffer<ffi::S32> q_start, ffi::Buffer<ffi::S32> context,
                          ffi::ResultBuffer<ffi::F32> out) {
  auto qd = q.dimensions(), kd = k_pages.dimensions(), vd = v_pages.dimensions(), td = page_table.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || td.size() != 2 || !std::equal(kd.begin(), kd.end(), vd.begin()))
    return ffi::Error::InvalidArgument("want q [R, Q, N, H], k/v pages [K, P, S, H], page_table [R, W]");
  Shapes s{qd[0], qd[1], qd[2], qd[3], kd[0], 0, kd[1], kd[2], td[1]};
  if (kd[3] != s.head_dim || s.kv_heads == 0 || s.heads % s.kv_heads != 0 || td[0] != s.rows ||
      q_start.element_count() != s.rows || context.element_count() != s.rows)
    return ffi::Error::InvalidArgument("q, pages, page_table, q_start and context disagree on R, H or the heads");
  s.group = s.heads / s.kv_heads;
  if (s.q_len == 0) return ffi::Error::Success();  // no query tokens, nothing to write
  const int32_t *table = page_table.typed_data(), *start = q_start.typed_data(), *ctx = context.typed_data();
  for (int64_t r = 0; r < s.rows; ++r) {
    const int64_t row_limit = std::max<int64_t>(0, std::min<int64_t>(start[r] + s.q_len, ctx[r]));
    if (row_limit > s.width * s.page_size) return ffi::Error::InvalidArgument("context out of range");
    for (int64_t p = 0; p < (row_limit + s.page_size - 1) / s.page_size; ++p)
      if (table[r * s.width + p] < 0 || table[r * s.width + p] >= s.pages)
        return ffi::Error::InvalidArgument("page id out of range");
  }
  const float *qp = q.typed_data(), *kp = k_pages.typed_data(), *vp = v_pages.typed_data();
  float* op = out->typed_data();
  constexpr int64_t kChunksPerThread = 8;  // small chunks, taken in turn: threads finish together
  lamps_jax::parallel_for(
      pool, s.rows * s.kv_heads,
      [=](int64_t first, int64_t last) {
        State st(s);
        for (int64_t i = first; i < last; ++i) {
          const int64_t r = i / s.kv_heads;
          if (s.head_dim == 64 && s.page_size == 16)
            attend<64, 16>(s, qp, kp, vp, table, start[r], ctx[r], r, i % s.kv_heads, op, st);
          else
            attend<0, 0>(s, qp, kp, vp, table, start[r], ctx[r], r, i % s.kv_heads, op, st);
        }
      },
      kChunksPerThread);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LampsPagedAttention, PagedAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
