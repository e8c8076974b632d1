// lamps_paged_decode_attention: attention of decode rows (one query token each) over their KV pages, read in
// place, as an XLA FFI handler. XLA's CPU backend can only reach a row's pages by gathering them into a new
// buffer; this kernel walks each row's page table and reads each page where it lies, only as far as the row's
// context goes.
//
// q [R, N, H] (already scaled), k_pages / v_pages [K, P, S, H], page_table [R, W], limit [R] (KV tokens the row
// sees) -> out [R, N, H]. The N = K * G query heads of kv head k are k * G .. k * G + G - 1. A row that sees no
// token gets zeros. Work items are (row, kv head) pairs, split over XLA's intra-op thread pool (parallel_for.h).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;  // partial sums per dot product, so that the compiler vectorizes it

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

struct Shapes {
  int64_t rows, heads, head_dim, kv_heads, group, pages, page_size, width;
};

// One (row, kv head): online softmax over the row's pages, a page at a time, for the group's query heads.
void attend(const Shapes& s, const float* q, const float* k_pages, const float* v_pages, const int32_t* page_table,
            int32_t limit, int64_t row, int64_t kv_head, float* out, float* scratch) {
  const int64_t G = s.group, H = s.head_dim, S = s.page_size;
  const float* q_row = q + (row * s.heads + kv_head * G) * H;  // [G, H]
  float* out_row = out + (row * s.heads + kv_head * G) * H;
  float* acc = scratch;             // [G, H]
  float* scores = scratch + G * H;  // [G, S]
  std::vector<float> max_score(G, -std::numeric_limits<float>::infinity()), denom(G, 0.0f);
  std::fill(acc, acc + G * H, 0.0f);
  const int64_t num_pages = (limit + S - 1) / S;
  for (int64_t p = 0; p < num_pages; ++p) {
    const int64_t page = page_table[row * s.width + p];
    const int64_t tokens = std::min<int64_t>(S, limit - p * S);
    const float* k = k_pages + ((kv_head * s.pages + page) * S) * H;
    const float* v = v_pages + ((kv_head * s.pages + page) * S) * H;
    if (p + 1 < num_pages) {  // the next page is elsewhere in memory: start fetching it now
      const int64_t next = ((kv_head * s.pages + page_table[row * s.width + p + 1]) * S) * H;
      for (int64_t i = 0; i < S * H; i += 16) {
        __builtin_prefetch(k_pages + next + i);
        __builtin_prefetch(v_pages + next + i);
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      float* sg = scores + g * S;
      float page_max = -std::numeric_limits<float>::infinity();
      for (int64_t t = 0; t < tokens; ++t) page_max = std::max(page_max, sg[t] = dot(q_row + g * H, k + t * H, H));
      const float new_max = std::max(max_score[g], page_max);
      const float correction = std::exp(max_score[g] - new_max);  // 0 on the first page
      max_score[g] = new_max;
      float* ag = acc + g * H;
      float page_sum = 0;
      for (int64_t h = 0; h < H; ++h) ag[h] *= correction;
      for (int64_t t = 0; t < tokens; ++t) {
        const float weight = std::exp(sg[t] - new_max);
        page_sum += weight;
        const float* vt = v + t * H;
        for (int64_t h = 0; h < H; ++h) ag[h] += weight * vt[h];
      }
      denom[g] = denom[g] * correction + page_sum;
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    const float inv = denom[g] > 0 ? 1.0f / denom[g] : 0.0f;
    for (int64_t h = 0; h < H; ++h) out_row[g * H + h] = acc[g * H + h] * inv;
  }
}

ffi::Error PagedDecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k_pages,
                                ffi::Buffer<ffi::F32> v_pages, ffi::Buffer<ffi::S32> page_table,
                                ffi::Buffer<ffi::S32> limit, ffi::ResultBuffer<ffi::F32> out) {
  auto qd = q.dimensions(), kd = k_pages.dimensions(), vd = v_pages.dimensions(), td = page_table.dimensions();
  if (qd.size() != 3 || kd.size() != 4 || vd.size() != 4 || td.size() != 2 || !std::equal(kd.begin(), kd.end(), vd.begin()))
    return ffi::Error::InvalidArgument("want q [R, N, H], k/v pages [K, P, S, H], page_table [R, W]");
  Shapes s{qd[0], qd[1], qd[2], kd[0], 0, kd[1], kd[2], td[1]};
  if (kd[3] != s.head_dim || s.kv_heads == 0 || s.heads % s.kv_heads != 0 || td[0] != s.rows ||
      limit.element_count() != s.rows)
    return ffi::Error::InvalidArgument("q, pages, page_table and limit disagree on R, H or the heads");
  s.group = s.heads / s.kv_heads;
  const int32_t* table = page_table.typed_data();
  const int32_t* lim = limit.typed_data();
  for (int64_t r = 0; r < s.rows; ++r) {
    if (lim[r] < 0 || lim[r] > s.width * s.page_size) return ffi::Error::InvalidArgument("limit out of range");
    for (int64_t p = 0; p < (lim[r] + s.page_size - 1) / s.page_size; ++p)
      if (table[r * s.width + p] < 0 || table[r * s.width + p] >= s.pages)
        return ffi::Error::InvalidArgument("page id out of range");
  }
  const float *qp = q.typed_data(), *kp = k_pages.typed_data(), *vp = v_pages.typed_data();
  float* op = out->typed_data();
  lamps_jax::parallel_for(pool, s.rows * s.kv_heads, [=](int64_t first, int64_t last) {
    std::vector<float> scratch(s.group * (s.head_dim + s.page_size));
    for (int64_t i = first; i < last; ++i)
      attend(s, qp, kp, vp, table, lim[i / s.kv_heads], i / s.kv_heads, i % s.kv_heads, op, scratch.data());
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LampsPagedDecodeAttention, PagedDecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
