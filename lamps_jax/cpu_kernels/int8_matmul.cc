// lamps_int8_matmul: y[M, N] = (x[M, K] @ w[K, N]) * scale[N] for float32 x and int8 w, as an XLA FFI
// handler. XLA's CPU backend converts an int8 weight into a float32 copy before its dot; this kernel
// converts each weight in registers, so a step reads a quarter of the float32 bytes.
//
// The weight comes packed as [N / 64, K, 64] (packed_int8.py): the 64 output columns of a block lie
// together for every k, so a block streams from memory in order. A block's columns are padded to 64
// with zeros; the scale is not padded (N is its length). Work is split by blocks over XLA's intra-op
// thread pool (parallel_for.h).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define LAMPS_AVX512 1
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 64;          // output columns per packed block
constexpr int64_t kPrefetchBytes = 4096;  // how far ahead of the weight stream to prefetch (measured)

#if LAMPS_AVX512
inline __m512 load_weights(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 load_weights(const float* p) { return _mm512_loadu_ps(p); }

// Rows [m0, m0 + R) of one block: R x 64 float32 accumulators in registers, one pass over its K x 64 weights
// (int8, converted here, or float32 converted once per block when several tiles of rows share it).
template <int R, typename W>
void tile(const float* x, const W* block, int64_t K, int64_t m0, float* acc_out) {
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* rows = x + m0 * K;
  const W* wp = block;
  for (int64_t k = 0; k < K; ++k, wp += kBlock) {
    __builtin_prefetch(reinterpret_cast<const char*>(wp) + kPrefetchBytes);
    __m512 w[4];
    for (int v = 0; v < 4; ++v) w[v] = load_weights(wp + 16 * v);
    for (int r = 0; r < R; ++r) {
      __m512 xr = _mm512_set1_ps(rows[r * K + k]);
      for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_fmadd_ps(xr, w[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(acc_out + r * kBlock + 16 * v, acc[r][v]);
}

template <typename W>
void block_rows(const float* x, const W* block, int64_t K, int64_t m0, int64_t rows, float* acc) {
  switch (rows) {
    case 6: tile<6>(x, block, K, m0, acc); break;
    case 5: tile<5>(x, block, K, m0, acc); break;
    case 4: tile<4>(x, block, K, m0, acc); break;
    case 3: tile<3>(x, block, K, m0, acc); break;
    case 2: tile<2>(x, block, K, m0, acc); break;
    default: tile<1>(x, block, K, m0, acc); break;
  }
}
constexpr int64_t kTileRows = 6;  // 6 x 4 accumulators + 4 weight vectors + 1 broadcast fit 32 registers
#else
template <typename W>
void block_rows(const float* x, const W* block, int64_t K, int64_t m0, int64_t rows, float* acc) {
  std::fill(acc, acc + rows * kBlock, 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    const W* wp = block + k * kBlock;
    __builtin_prefetch(reinterpret_cast<const char*>(wp) + kPrefetchBytes);
    for (int64_t r = 0; r < rows; ++r) {
      float xr = x[(m0 + r) * K + k];
      for (int64_t j = 0; j < kBlock; ++j) acc[r * kBlock + j] += xr * static_cast<float>(wp[j]);
    }
  }
}
constexpr int64_t kTileRows = 4;
#endif

// Output columns of block b for every row: accumulate, scale, store the block's real columns. With more than one
// tile of rows, the block's weights are converted to float32 once (``converted``: K x 64 floats) and shared.
void run_block(const float* x, const int8_t* w, const float* scale, float* y, int64_t M, int64_t K, int64_t N,
               int64_t b, std::vector<float>& converted) {
  alignas(64) float acc[kTileRows * kBlock];
  int64_t n0 = b * kBlock, width = std::min(kBlock, N - n0);
  const int8_t* block = w + b * K * kBlock;
  const bool shared = M > kTileRows;
  if (shared) {
    converted.resize(K * kBlock);
    for (int64_t i = 0; i < K * kBlock; ++i) converted[i] = static_cast<float>(block[i]);
  }
  for (int64_t m0 = 0; m0 < M; m0 += kTileRows) {
    int64_t rows = std::min(kTileRows, M - m0);
    if (shared)
      block_rows(x, converted.data(), K, m0, rows, acc);
    else
      block_rows(x, block, K, m0, rows, acc);
    for (int64_t r = 0; r < rows; ++r) {
      float* out = y + (m0 + r) * N + n0;
      for (int64_t j = 0; j < width; ++j) out[j] = acc[r * kBlock + j] * scale[n0 + j];
    }
  }
}

ffi::Error Int8Matmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S8> w,
                      ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  auto dims = w.dimensions();
  if (dims.size() != 3 || dims[2] != kBlock) return ffi::Error::InvalidArgument("weight must be [N/64, K, 64]");
  int64_t blocks = dims[0], K = dims[1], N = scale.element_count();
  if (N > blocks * kBlock || N <= (blocks - 1) * kBlock)
    return ffi::Error::InvalidArgument("scale length does not match the weight's blocks");
  if (K == 0 || x.element_count() % K != 0) return ffi::Error::InvalidArgument("x's last axis must be K");
  int64_t M = x.element_count() / K;
  if (y->element_count() != M * N) return ffi::Error::InvalidArgument("output must be [..., N]");
  const float* xp = x.typed_data();
  const int8_t* wp = w.typed_data();
  const float* sp = scale.typed_data();
  float* yp = y->typed_data();
  lamps_jax::parallel_for(pool, blocks, [=](int64_t first, int64_t last) {
    std::vector<float> converted;
    for (int64_t b = first; b < last; ++b) run_block(xp, wp, sp, yp, M, K, N, b, converted);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LampsInt8Matmul, Int8Matmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
