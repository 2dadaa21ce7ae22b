// Direct 3D convolution and max-pool kernels for XLA on CPU, called through the XLA FFI
// (emojax/kernels/native.py).
//
// XLA's CPU runtime has no fast 3D convolution: its own is 5-10x slower than
// PyTorch's oneDNN, and im2col + matmul spends most of its time writing the
// im2col matrix. These kernels read the input in place. For a stride-1 VALID
// convolution, channels last, one output row of the (kt, kh) kernel slice is a
// small matrix product whose left operand is the input row read with
// overlapping rows:
//   y[w, co] += sum_j x_row[w * C_in + j] * k[j, co],   j = kw * C_in + ci < KW * C_in
// The forward pass keeps a tile of (output positions x channel
// vectors) in registers; the kernel gradient keeps a tile of (j x channel
// vectors) in registers and sums over the positions of a group of rows.
// The work is split into rows taken from a shared counter by the caller and the
// tasks it schedules on XLA's intra-op thread pool.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// One vector register of floats, as wide as -march=native gives, and the register tiles sized to the
// register file: a generic vector wider than the hardware's, or more accumulators than registers, is kept
// on the stack (10x slower). Tile shapes change which sums run together, never the order of a sum's terms,
// so every tile gives the same bits. Channel counts are multiples of 16 (the caller pads them).
#if defined(__AVX512F__)
constexpr int kLanes = 16;  // zmm
// 24 accumulators of the 32 registers; tiles up to 4 vectors (64 channels) wide.
constexpr int kAccumulators = 24, kMaxTileVectors = 4;
#else
constexpr int kLanes = 8;  // ymm (AVX2)
// 12 accumulators of the 16 registers; tiles 2 vectors (16 channels) wide.
constexpr int kAccumulators = 12, kMaxTileVectors = 2;
#endif
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }

// How many vectors a tile spans for c_out (a multiple of 16) output channels.
inline int TileVectors(int64_t c_out) {
  for (int vectors = kMaxTileVectors; vectors > 1; vectors /= 2)
    if (c_out % (vectors * kLanes) == 0) return vectors;
  return 1;
}

// Runs work(row) for every row in [0, rows) on the caller and on up to (workers - 1) tasks scheduled
// on XLA's thread pool, and returns when every row is done. Rows are claimed from a shared counter, so the
// caller never waits for a task that has not started: a pool whose threads are all busy (with other calls
// like this one, say) cannot deadlock it. A task that starts after the last row is claimed touches only the
// shared counters, which it keeps alive.
template <typename Work>
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, int64_t workers, const Work& work) {
  struct Shared {
    std::atomic<int64_t> next{0}, done{0};
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto shared = std::make_shared<Shared>();
  auto run = [shared, rows, &work] {
    for (int64_t row = shared->next.fetch_add(1); row < rows; row = shared->next.fetch_add(1)) {
      work(row);
      if (shared->done.fetch_add(1) + 1 == rows) {
        std::lock_guard<std::mutex> lock(shared->mutex);
        shared->all_done.notify_all();
      }
    }
  };
  for (int64_t task = 1; task < workers; ++task) pool.Schedule([run] { run(); });
  run();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->all_done.wait(lock, [&] { return shared->done.load() == rows; });
}

int64_t Workers(ffi::ThreadPool& pool, int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), rows));
}

// Calls tile(start, width) over [0, n) in tiles at most max_width wide and as equal as they can be: a
// narrow last tile (7 = 6 + 1) holds too few accumulators to hide the FMA's latency.
template <typename Tile>
void BalancedTiles(int64_t n, int64_t max_width, const Tile& tile) {
  const int64_t tiles = (n + max_width - 1) / max_width, width = n / tiles, wider = n % tiles;
  for (int64_t k = 0, start = 0; k < tiles; start += width + (k < wider), ++k) tile(start, width + (k < wider));
}

// ---- forward: y[w0:w0+WB, co0:co0+kLanes*CV] = sum over (kt, kh) and j -------------------------------

template <int WB, int CV>
inline void ForwardTile(const float* const* x_rows, const float* const* k_slices, int n_slices, int64_t j_count,
                        int64_t c_in, int64_t c_out, int64_t w0, int64_t co0, float* y_row) {
  vf acc[WB][CV] = {};
  for (int s = 0; s < n_slices; ++s) {
    const float* x = x_rows[s] + w0 * c_in;
    const float* k = k_slices[s] + co0;
    for (int64_t j = 0; j < j_count; ++j) {
      vf kv[CV];
      for (int c = 0; c < CV; ++c) kv[c] = load(k + j * c_out + kLanes * c);
#pragma GCC unroll 32
      for (int b = 0; b < WB; ++b) {
        const float xv = x[b * c_in + j];
        for (int c = 0; c < CV; ++c) acc[b][c] += xv * kv[c];
      }
    }
  }
  for (int b = 0; b < WB; ++b)
    for (int c = 0; c < CV; ++c) store(y_row + (w0 + b) * c_out + co0 + kLanes * c, acc[b][c]);
}

// ForwardTile<wb, CV> for a run-time wb <= WB.
template <int WB, int CV>
void ForwardTileOf(int64_t wb, const float* const* x_rows, const float* const* k_slices, int n_slices,
                   int64_t j_count, int64_t c_in, int64_t c_out, int64_t w0, int64_t co0, float* y_row) {
  if constexpr (WB > 0) {
    if (wb == WB) return ForwardTile<WB, CV>(x_rows, k_slices, n_slices, j_count, c_in, c_out, w0, co0, y_row);
    ForwardTileOf<WB - 1, CV>(wb, x_rows, k_slices, n_slices, j_count, c_in, c_out, w0, co0, y_row);
  }
}

template <int CV>
void ForwardRow(const float* const* x_rows, const float* const* k_slices, int n_slices, int64_t j_count,
                int64_t c_in, int64_t c_out, int64_t w_out, float* y_row) {
  constexpr int kWB = kAccumulators / CV;  // leaves registers for the kernel vectors
  for (int64_t co0 = 0; co0 < c_out; co0 += kLanes * CV)
    BalancedTiles(w_out, kWB, [&](int64_t w0, int64_t wb) {
      ForwardTileOf<kWB, CV>(wb, x_rows, k_slices, n_slices, j_count, c_in, c_out, w0, co0, y_row);
    });
}

// pad_t and pad_h: zero rows around x in time and height that are not in memory. The slices of the kernel
// that fall on them are skipped, which also saves their multiplications by zero: the input gradient is this
// convolution over the output gradient padded by the kernel size less one on every side.
ffi::Error Conv3dForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> kernel,
                         ffi::ResultBuffer<ffi::F32> y, int64_t pad_t_low, int64_t pad_t_high, int64_t pad_h_low,
                         int64_t pad_h_high) {
  const auto xd = x.dimensions(), kd = kernel.dimensions(), yd = y->dimensions();
  if (xd.size() != 5 || kd.size() != 5 || yd.size() != 5)
    return ffi::Error::InvalidArgument("conv3d_forward: x, kernel and y must be 5-D (NDHWC, DHWIO, NDHWC)");
  const int64_t n = xd[0], t = xd[1], h = xd[2], w = xd[3], c_in = xd[4];
  const int64_t kt = kd[0], kh = kd[1], kw = kd[2], c_out = kd[4];
  const int64_t t_out = t + pad_t_low + pad_t_high - kt + 1, h_out = h + pad_h_low + pad_h_high - kh + 1;
  const int64_t w_out = w - kw + 1;
  if (kd[3] != c_in || c_out % 16 != 0 || t_out < 1 || h_out < 1 || w_out < 1 || yd[0] != n ||
      yd[1] != t_out || yd[2] != h_out || yd[3] != w_out || yd[4] != c_out || pad_t_low < 0 || pad_t_high < 0 ||
      pad_h_low < 0 || pad_h_high < 0)
    return ffi::Error::InvalidArgument("conv3d_forward: shapes do not describe a VALID stride-1 convolution "
                                       "with a multiple of 16 output channels");
  const int64_t j_count = kw * c_in, rows = n * t_out * h_out;
  const float* xp = x.typed_data();
  const float* kp = kernel.typed_data();
  float* yp = y->typed_data();
  ParallelRows(pool, rows, Workers(pool, rows), [&](int64_t row) {
    const int64_t i = row / (t_out * h_out), to = row / h_out % t_out, ho = row % h_out;
    // the slices that fall on rows in memory (thread_local: no allocation per row)
    thread_local std::vector<const float*> x_rows, k_slices;
    x_rows.clear();
    k_slices.clear();
    for (int64_t a = 0; a < kt; ++a) {
      const int64_t ti = to + a - pad_t_low;
      if (ti < 0 || ti >= t) continue;
      for (int64_t b = 0; b < kh; ++b) {
        const int64_t hi = ho + b - pad_h_low;
        if (hi < 0 || hi >= h) continue;
        x_rows.push_back(xp + (((i * t + ti) * h + hi) * w) * c_in);
        k_slices.push_back(kp + (a * kh + b) * j_count * c_out);
      }
    }
    const int n_slices = static_cast<int>(x_rows.size());
    float* y_row = yp + row * w_out * c_out;
    switch (TileVectors(c_out)) {
      case 4: return ForwardRow<4>(x_rows.data(), k_slices.data(), n_slices, j_count, c_in, c_out, w_out, y_row);
      case 2: return ForwardRow<2>(x_rows.data(), k_slices.data(), n_slices, j_count, c_in, c_out, w_out, y_row);
      default: return ForwardRow<1>(x_rows.data(), k_slices.data(), n_slices, j_count, c_in, c_out, w_out, y_row);
    }
  });
  return ffi::Error::Success();
}

// ---- kernel gradient: dk[j0:j0+JB, co0:co0+kLanes*CV] += sum_w x_row[w * C_in + j] dy_row[w, co] --------

// A tile sums over a group of (x row, dy row) pairs before storing its accumulators: a row alone can be
// short (7 positions in the paper's last video layer), too few FMAs to hide the tile's load and store.
// The pairs come in the order of the sum's terms, so grouping them changes no bits.
constexpr int64_t kGradPositions = 128;  // per group: enough FMAs per tile, rows still in cache

template <int JB, int CV>
inline void KernelGradTile(const float* const* x_rows, const float* const* dy_rows, int64_t n_rows, int64_t c_in,
                           int64_t c_out, int64_t w_out, int64_t j0, int64_t co0, float* dk) {
  vf acc[JB][CV];
  for (int b = 0; b < JB; ++b)
    for (int c = 0; c < CV; ++c) acc[b][c] = load(dk + (j0 + b) * c_out + co0 + kLanes * c);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x_row = x_rows[r] + j0;
    const float* dy_row = dy_rows[r] + co0;
    for (int64_t wi = 0; wi < w_out; ++wi) {
      const float* x = x_row + wi * c_in;
      vf dv[CV];
      for (int c = 0; c < CV; ++c) dv[c] = load(dy_row + wi * c_out + kLanes * c);
#pragma GCC unroll 32
      for (int b = 0; b < JB; ++b) {
        const float xv = x[b];
        for (int c = 0; c < CV; ++c) acc[b][c] += xv * dv[c];
      }
    }
  }
  for (int b = 0; b < JB; ++b)
    for (int c = 0; c < CV; ++c) store(dk + (j0 + b) * c_out + co0 + kLanes * c, acc[b][c]);
}

// KernelGradTile<jb, CV> for a run-time jb <= JB.
template <int JB, int CV>
void KernelGradTileOf(int64_t jb, const float* const* x_rows, const float* const* dy_rows, int64_t n_rows,
                      int64_t c_in, int64_t c_out, int64_t w_out, int64_t j0, int64_t co0, float* dk) {
  if constexpr (JB > 0) {
    if (jb == JB) return KernelGradTile<JB, CV>(x_rows, dy_rows, n_rows, c_in, c_out, w_out, j0, co0, dk);
    KernelGradTileOf<JB - 1, CV>(jb, x_rows, dy_rows, n_rows, c_in, c_out, w_out, j0, co0, dk);
  }
}

template <int CV>
void KernelGradRows(const float* const* x_rows, const float* const* dy_rows, int64_t n_rows, int64_t j_count,
                    int64_t c_in, int64_t c_out, int64_t w_out, float* dk) {
  constexpr int kJB = CV == 1 ? std::min(12, kAccumulators) : kAccumulators / CV;
  for (int64_t co0 = 0; co0 < c_out; co0 += kLanes * CV)
    BalancedTiles(j_count, kJB, [&](int64_t j0, int64_t jb) {
      KernelGradTileOf<kJB, CV>(jb, x_rows, dy_rows, n_rows, c_in, c_out, w_out, j0, co0, dk);
    });
}

ffi::Error Conv3dKernelGrad(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                            ffi::ResultBuffer<ffi::F32> dk) {
  const auto xd = x.dimensions(), gd = dy.dimensions(), kd = dk->dimensions();
  if (xd.size() != 5 || gd.size() != 5 || kd.size() != 5)
    return ffi::Error::InvalidArgument("conv3d_kernel_grad: x, dy and the kernel must be 5-D");
  const int64_t n = xd[0], t = xd[1], h = xd[2], w = xd[3], c_in = xd[4];
  const int64_t kt = kd[0], kh = kd[1], kw = kd[2], c_out = kd[4];
  const int64_t t_out = t - kt + 1, h_out = h - kh + 1, w_out = w - kw + 1;
  if (kd[3] != c_in || c_out % 16 != 0 || t_out < 1 || h_out < 1 || w_out < 1 || gd[0] != n ||
      gd[1] != t_out || gd[2] != h_out || gd[3] != w_out || gd[4] != c_out)
    return ffi::Error::InvalidArgument("conv3d_kernel_grad: shapes do not describe a VALID stride-1 convolution "
                                       "with a multiple of 16 output channels");
  const int64_t j_count = kw * c_in, slice = j_count * c_out, size = kt * kh * slice;
  // The (n, t) rows are cut into a fixed number of contiguous blocks, each summed in row order into its own
  // partial sums, which are then added in block order: the result does not depend on which thread took
  // which block, so a seeded run repeats bit for bit.
  const int64_t rows = n * t_out, blocks = std::min<int64_t>(rows, 16);
  const int vectors = TileVectors(c_out);
  std::vector<std::vector<float>> partial(blocks, std::vector<float>(size, 0.0f));
  const float* xp = x.typed_data();
  const float* gp = dy.typed_data();
  ParallelRows(pool, blocks, Workers(pool, blocks), [&](int64_t block) {
    float* dk_block = partial[block].data();
    const int64_t first = block * rows / blocks, last = (block + 1) * rows / blocks;
    const int64_t group = std::max<int64_t>(1, kGradPositions / w_out);  // dy rows per group
    std::vector<const float*> dy_rows, x_starts, x_rows;  // x_starts: x at slice (0, 0) of each dy row
    auto flush = [&] {  // every slice of the kernel over the group's rows
      for (int64_t a = 0; a < kt; ++a)
        for (int64_t b = 0; b < kh; ++b) {
          x_rows.clear();
          for (const float* x_start : x_starts) x_rows.push_back(x_start + (a * h + b) * w * c_in);
          float* dk_slice = dk_block + (a * kh + b) * slice;
          const int64_t n_rows = dy_rows.size();
          switch (vectors) {
            case 4: KernelGradRows<4>(x_rows.data(), dy_rows.data(), n_rows, j_count, c_in, c_out, w_out, dk_slice);
              break;
            case 2: KernelGradRows<2>(x_rows.data(), dy_rows.data(), n_rows, j_count, c_in, c_out, w_out, dk_slice);
              break;
            default: KernelGradRows<1>(x_rows.data(), dy_rows.data(), n_rows, j_count, c_in, c_out, w_out, dk_slice);
          }
        }
      dy_rows.clear();
      x_starts.clear();
    };
    for (int64_t row = first; row < last; ++row) {  // the rows of dy, in order
      const int64_t i = row / t_out, ti = row % t_out;
      for (int64_t hi = 0; hi < h_out; ++hi) {
        dy_rows.push_back(gp + ((row * h_out + hi) * w_out) * c_out);
        x_starts.push_back(xp + (((i * t + ti) * h + hi) * w) * c_in);
        if (static_cast<int64_t>(dy_rows.size()) == group) flush();
      }
    }
    if (!dy_rows.empty()) flush();
  });
  float* out = dk->typed_data();
  std::copy(partial[0].begin(), partial[0].end(), out);
  for (int64_t k = 1; k < blocks; ++k)
    for (int64_t e = 0; e < size; ++e) out[e] += partial[k][e];
  return ffi::Error::Success();
}

// ---- max-pool over (1, WH, WW) windows with strides (1, SH, SW), VALID, and its gradient -----------------
// Channels in vectors (the caller passes a multiple of 16). The gradient goes to the first maximum
// of each window in row-major order, as XLA's select-and-scatter (nn.max_pool) and PyTorch give it. One
// task per (n, t) plane: windows overlap only within a plane.

ffi::Error MaxPoolForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y,
                          int64_t window_h, int64_t window_w, int64_t stride_h, int64_t stride_w) {
  const auto xd = x.dimensions(), yd = y->dimensions();
  if (xd.size() != 5 || yd.size() != 5 || window_h < 1 || window_w < 1 || stride_h < 1 || stride_w < 1 ||
      xd[4] % 16 != 0)
    return ffi::Error::InvalidArgument("max_pool_forward: x and y must be 5-D (NDHWC) with a multiple of 16 "
                                       "channels, windows and strides >= 1");
  const int64_t planes = xd[0] * xd[1], h = xd[2], w = xd[3], c = xd[4];
  const int64_t h_out = (h - window_h) / stride_h + 1, w_out = (w - window_w) / stride_w + 1;
  if (h < window_h || w < window_w || yd[0] * yd[1] != planes || yd[2] != h_out || yd[3] != w_out || yd[4] != c)
    return ffi::Error::InvalidArgument("max_pool_forward: y's shape is not the VALID pooling of x's");
  const float* xp = x.typed_data();
  float* yp = y->typed_data();
  ParallelRows(pool, planes, Workers(pool, planes), [&](int64_t plane) {
    const float* xs = xp + plane * h * w * c;
    for (int64_t ho = 0; ho < h_out; ++ho)
      for (int64_t wo = 0; wo < w_out; ++wo)
        for (int64_t k = 0; k < c; k += kLanes) {
          const float* corner = xs + (ho * stride_h * w + wo * stride_w) * c + k;
          vf top = load(corner);
          for (int64_t a = 0; a < window_h; ++a)
            for (int64_t b = 0; b < window_w; ++b) {
              const vf v = load(corner + (a * w + b) * c);
              top = v > top ? v : top;
            }
          store(yp + ((plane * h_out + ho) * w_out + wo) * c + k, top);
        }
  });
  return ffi::Error::Success();
}

ffi::Error MaxPoolBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> y,
                           ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dx, int64_t window_h,
                           int64_t window_w, int64_t stride_h, int64_t stride_w) {
  const auto xd = x.dimensions(), yd = y.dimensions();
  if (xd.size() != 5 || yd.size() != 5 || dy.dimensions().size() != 5 || dx->dimensions().size() != 5 ||
      xd[4] % 16 != 0)
    return ffi::Error::InvalidArgument("max_pool_backward: every array must be 5-D (NDHWC), with a multiple of "
                                       "16 channels");
  const int64_t planes = xd[0] * xd[1], h = xd[2], w = xd[3], c = xd[4], h_out = yd[2], w_out = yd[3];
  if (h_out != (h - window_h) / stride_h + 1 || w_out != (w - window_w) / stride_w + 1 || yd[4] != c)
    return ffi::Error::InvalidArgument("max_pool_backward: y's shape is not the VALID pooling of x's");
  const float* xp = x.typed_data();
  const float* yp = y.typed_data();
  const float* gp = dy.typed_data();
  float* dxp = dx->typed_data();
  ParallelRows(pool, planes, Workers(pool, planes), [&](int64_t plane) {
    const float* xs = xp + plane * h * w * c;
    float* dxs = dxp + plane * h * w * c;
    std::fill(dxs, dxs + h * w * c, 0.0f);
    const vf zero = {};
    for (int64_t ho = 0; ho < h_out; ++ho)
      for (int64_t wo = 0; wo < w_out; ++wo)
        for (int64_t k = 0; k < c; k += kLanes) {
          const int64_t out = ((plane * h_out + ho) * w_out + wo) * c + k;
          const vf top = load(yp + out), g = load(gp + out);
          vi open = ~vi{};  // lanes whose maximum is not yet found
          for (int64_t a = 0; a < window_h; ++a)
            for (int64_t b = 0; b < window_w; ++b) {
              const int64_t at = ((ho * stride_h + a) * w + wo * stride_w + b) * c + k;
              const vi first = (load(xs + at) == top) & open;
              open &= ~first;
              store(dxs + at, load(dxs + at) + (first ? g : zero));
            }
        }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmojaxConv3dForward, Conv3dForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pad_t_low")
                                  .Attr<int64_t>("pad_t_high")
                                  .Attr<int64_t>("pad_h_low")
                                  .Attr<int64_t>("pad_h_high"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmojaxConv3dKernelGrad, Conv3dKernelGrad,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmojaxMaxPoolForward, MaxPoolForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("window_h")
                                  .Attr<int64_t>("window_w")
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EmojaxMaxPoolBackward, MaxPoolBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("window_h")
                                  .Attr<int64_t>("window_w")
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w"));
