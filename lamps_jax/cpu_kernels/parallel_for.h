// parallel_for: items [0, n) cut into contiguous chunks, chunks_per_thread per thread of XLA's intra-op pool (one
// by default), body(begin, end) per chunk; the threads take the chunks in turn, so items of uneven cost balance out
// with more chunks. The calling thread takes chunks too and returns once every chunk is done, so a busy or absent
// pool delays the work but never stalls it. Shared by the kernels of this folder.
#ifndef LAMPS_JAX_CPU_KERNELS_PARALLEL_FOR_H_
#define LAMPS_JAX_CPU_KERNELS_PARALLEL_FOR_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace lamps_jax {

struct ChunkProgress {
  std::atomic<int64_t> next{0};  // the next chunk to take
  std::atomic<int64_t> done{0};  // chunks finished
};

template <typename Body>
void parallel_for(xla::ffi::ThreadPool& pool, int64_t n, Body body, int64_t chunks_per_thread = 1) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunks = std::min(n, threads * chunks_per_thread);
  if (chunks <= 0) return;
  auto progress = std::make_shared<ChunkProgress>();
  auto work = [=]() {
    for (int64_t c; (c = progress->next.fetch_add(1)) < chunks;) {
      body(n * c / chunks, n * (c + 1) / chunks);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 1; t < std::min(chunks, threads); ++t) pool.Schedule([work]() { work(); });
  work();
  while (progress->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

}  // namespace lamps_jax

#endif  // LAMPS_JAX_CPU_KERNELS_PARALLEL_FOR_H_
