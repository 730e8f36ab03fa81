// CUDA kernels for StyleGAN2's two custom ops (written for hfgi; semantics match the
// plain-PyTorch reference paths in hfgi_cli/models/ops.py).
//
//   fused_bias_act: out = leaky_relu(x + bias[c], slope) * scale, x is [N, C, ...]
//   modulated_act:  x = leaky_relu(x * demod[n,c] + noise[h,w] + bias[c], slope) * gain, in place
//   upfirdn2d:      zero-insertion upsample -> pad (negative = crop) -> true 2-D convolution
//                   (flipped kernel) -> keep every down-th sample.
//
// All kernels are templated on the storage type (float / half / bfloat16) and accumulate in
// float (at::opmath_type). Launchers run on the current CUDA stream; input checks and the
// device guard live in ops.cpp.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>  // lighter than ATen/cuda/CUDAContext.h (no cuBLAS/cuSPARSE headers)

#include <algorithm>
#include <cstdint>

namespace {

constexpr int kThreads = 256;

// Floor division / non-negative modulo for possibly negative numerators.
__host__ __device__ __forceinline__ int floor_div(int a, int b) {
  int q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__host__ __device__ __forceinline__ int pos_mod(int a, int b) {
  int r = a % b;
  return r < 0 ? r + b : r;
}

int64_t blocks_for(int64_t work) {
  // Grid-stride loops below, so cap the grid at a comfortable size.
  return std::max<int64_t>(1, std::min<int64_t>((work + kThreads - 1) / kThreads, 65535LL * 8));
}

// -----------------------------------------------------------------------------------------
// fused bias + leaky ReLU
// -----------------------------------------------------------------------------------------

template <typename scalar_t, typename index_t>
__global__ void fused_bias_act_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                      const scalar_t* __restrict__ bias, index_t numel, index_t channels,
                                      index_t inner, float slope, float scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const index_t c = (i / inner) % channels;
    acc_t v = static_cast<acc_t>(x[i]) + static_cast<acc_t>(bias[c]);
    v = v > acc_t(0) ? v : v * static_cast<acc_t>(slope);
    out[i] = static_cast<scalar_t>(v * static_cast<acc_t>(scale));
  }
}

// -----------------------------------------------------------------------------------------
// demodulate + noise + bias + leaky ReLU, in place: the whole tail of a StyleGAN2 styled conv in
// one pass over the activations (instead of four).
//   x[n,c,h,w] = leaky_relu(x * demod[n,c] + noise[h,w] + bias[c], slope) * gain
// demod and noise are float32 and optional (nullptr).
// -----------------------------------------------------------------------------------------

template <typename scalar_t, typename index_t>
__global__ void modulated_act_kernel(scalar_t* __restrict__ x, const float* __restrict__ demod,
                                     const float* __restrict__ noise, const scalar_t* __restrict__ bias,
                                     index_t numel, index_t channels, index_t inner, float slope, float gain) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(blockDim.x) * gridDim.x;
  for (index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const index_t row = i / inner;  // n * C + c
    acc_t v = static_cast<acc_t>(x[i]);
    if (demod != nullptr) v = v * static_cast<acc_t>(demod[row]);
    if (noise != nullptr) v = v + static_cast<acc_t>(noise[i - row * inner]);
    v = v + static_cast<acc_t>(bias[row % channels]);
    v = v > acc_t(0) ? v : v * static_cast<acc_t>(slope);
    x[i] = static_cast<scalar_t>(v * static_cast<acc_t>(gain));
  }
}

// -----------------------------------------------------------------------------------------
// upfirdn2d, general path: one thread per output sample (grid-stride), visiting only the
// taps that land on real (non-inserted, in-range) input samples.
// -----------------------------------------------------------------------------------------

struct UpFirDnParams {
  int planes;  // N * C
  int in_h, in_w, out_h, out_w, kh, kw;
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
};

template <typename scalar_t>
__global__ void upfirdn2d_generic_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                                         const scalar_t* __restrict__ kernel, UpFirDnParams p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = static_cast<int64_t>(p.planes) * p.out_h * p.out_w;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int ox = static_cast<int>(i % p.out_w);
    const int oy = static_cast<int>((i / p.out_w) % p.out_h);
    const int64_t plane = i / (static_cast<int64_t>(p.out_w) * p.out_h);
    const scalar_t* xp = x + plane * p.in_h * p.in_w;

    // Position (in upsampled, unpadded coordinates) of tap 0 for this output.
    const int uy0 = oy * p.down_y - p.pad_y0;
    const int ux0 = ox * p.down_x - p.pad_x0;
    // First tap that hits a real sample (upsampled index divisible by up).
    const int ky0 = pos_mod(-uy0, p.up_y);
    const int kx0 = pos_mod(-ux0, p.up_x);

    acc_t acc = acc_t(0);
    for (int ky = ky0; ky < p.kh; ky += p.up_y) {
      const int iy = (uy0 + ky) / p.up_y;  // exact: uy0 + ky is a multiple of up_y
      if (iy < 0 || iy >= p.in_h) continue;
      // True convolution: tap offset ky uses kernel row kh-1-ky.
      const scalar_t* krow = kernel + (p.kh - 1 - ky) * p.kw;
      for (int kx = kx0; kx < p.kw; kx += p.up_x) {
        const int ix = (ux0 + kx) / p.up_x;
        if (ix < 0 || ix >= p.in_w) continue;
        acc += static_cast<acc_t>(xp[iy * p.in_w + ix]) * static_cast<acc_t>(krow[p.kw - 1 - kx]);
      }
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

// -----------------------------------------------------------------------------------------
// upfirdn2d, tiled fast path for fixed (UP, DOWN, KH, KW), same factors on both axes.
// A block owns a TOH x TOW output tile; it stages the input footprint of that tile (zero
// outside the image, i.e. the padding) and the flipped kernel in shared memory, then each
// thread computes outputs from shared memory with fully unrolled tap loops. The block walks
// over planes (N * C) with a grid-stride loop along z.
// -----------------------------------------------------------------------------------------

template <typename scalar_t, int UP, int DOWN, int KH, int KW, int TOH, int TOW>
__global__ void __launch_bounds__(kThreads)
    upfirdn2d_tiled_kernel(scalar_t* __restrict__ out, const scalar_t* __restrict__ x,
                           const scalar_t* __restrict__ kernel, UpFirDnParams p) {
  // Input rows/cols a tile can touch (see floor_div bounds below); +2 covers rounding.
  constexpr int TIH = ((TOH - 1) * DOWN + KH - 1) / UP + 2;
  constexpr int TIW = ((TOW - 1) * DOWN + KW - 1) / UP + 2;
  constexpr int TAPS_Y = (KH + UP - 1) / UP;
  constexpr int TAPS_X = (KW + UP - 1) / UP;

  __shared__ float sk[KH][KW];    // sk[ky][kx] = kernel[KH-1-ky][KW-1-kx] (flipped)
  __shared__ float sx[TIH][TIW];  // staged input footprint

  const int tid = threadIdx.x;
  for (int i = tid; i < KH * KW; i += blockDim.x) {
    const int ky = i / KW, kx = i % KW;
    sk[ky][kx] = static_cast<float>(kernel[(KH - 1 - ky) * KW + (KW - 1 - kx)]);
  }

  const int tile_oy = blockIdx.y * TOH;
  const int tile_ox = blockIdx.x * TOW;
  const int in_y0 = floor_div(tile_oy * DOWN - p.pad_y0, UP);
  const int in_x0 = floor_div(tile_ox * DOWN - p.pad_x0, UP);

  for (int plane = blockIdx.z; plane < p.planes; plane += gridDim.z) {
    const scalar_t* xp = x + static_cast<int64_t>(plane) * p.in_h * p.in_w;
    scalar_t* op = out + static_cast<int64_t>(plane) * p.out_h * p.out_w;

    __syncthreads();  // previous plane's reads of sx are done
    for (int i = tid; i < TIH * TIW; i += blockDim.x) {
      const int r = i / TIW, c = i % TIW;
      const int iy = in_y0 + r, ix = in_x0 + c;
      const bool inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
      sx[r][c] = inside ? static_cast<float>(xp[iy * p.in_w + ix]) : 0.f;
    }
    __syncthreads();

    for (int i = tid; i < TOH * TOW; i += blockDim.x) {
      const int oy = tile_oy + i / TOW;
      const int ox = tile_ox + i % TOW;
      if (oy >= p.out_h || ox >= p.out_w) continue;
      const int uy0 = oy * DOWN - p.pad_y0;
      const int ux0 = ox * DOWN - p.pad_x0;
      const int ky0 = pos_mod(-uy0, UP);
      const int kx0 = pos_mod(-ux0, UP);
      const int sy = (uy0 + ky0) / UP - in_y0;  // exact division, then tile-relative
      const int sxx = (ux0 + kx0) / UP - in_x0;
      float acc = 0.f;
#pragma unroll
      for (int ty = 0; ty < TAPS_Y; ++ty) {
        const int ky = ky0 + ty * UP;
        if (ky < KH) {
#pragma unroll
          for (int tx = 0; tx < TAPS_X; ++tx) {
            const int kx = kx0 + tx * UP;
            if (kx < KW) acc += sx[sy + ty][sxx + tx] * sk[ky][kx];
          }
        }
      }
      op[oy * p.out_w + ox] = static_cast<scalar_t>(acc);
    }
  }
}

template <int UP, int DOWN, int KH, int KW, int TOH, int TOW>
void launch_tiled(at::Tensor& out, const at::Tensor& x, const at::Tensor& kernel, const UpFirDnParams& p,
                  cudaStream_t stream) {
  const dim3 grid((p.out_w + TOW - 1) / TOW, (p.out_h + TOH - 1) / TOH, std::min(p.planes, 65535));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_tiled", [&] {
    upfirdn2d_tiled_kernel<scalar_t, UP, DOWN, KH, KW, TOH, TOW><<<grid, kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), kernel.data_ptr<scalar_t>(), p);
  });
}

}  // namespace

// -----------------------------------------------------------------------------------------
// Launchers (called from ops.cpp after input checks and device guard)
// -----------------------------------------------------------------------------------------

at::Tensor fused_bias_act_cuda(const at::Tensor& x, const at::Tensor& bias, double negative_slope,
                               double scale) {
  auto out = at::empty_like(x);
  const int64_t numel = x.numel();
  if (numel == 0) return out;
  const int64_t channels = x.size(1);
  const int64_t inner = numel / (x.size(0) * channels);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t blocks = blocks_for(numel);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "fused_bias_act", [&] {
    if (numel <= INT32_MAX) {  // 32-bit index maths is noticeably cheaper
      fused_bias_act_kernel<scalar_t, int32_t><<<blocks, kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(),
          static_cast<int32_t>(numel), static_cast<int32_t>(channels), static_cast<int32_t>(inner),
          static_cast<float>(negative_slope), static_cast<float>(scale));
    } else {
      fused_bias_act_kernel<scalar_t, int64_t><<<blocks, kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), bias.data_ptr<scalar_t>(), numel, channels,
          inner, static_cast<float>(negative_slope), static_cast<float>(scale));
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor modulated_act_cuda(at::Tensor& x, const at::Tensor& demod, const at::Tensor& noise,
                              const at::Tensor& bias, double negative_slope, double gain) {
  const int64_t numel = x.numel();
  if (numel == 0) return x;
  const int64_t channels = x.size(1);
  const int64_t inner = numel / (x.size(0) * channels);
  const float* demod_ptr = demod.numel() > 0 ? demod.data_ptr<float>() : nullptr;
  const float* noise_ptr = noise.numel() > 0 ? noise.data_ptr<float>() : nullptr;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t blocks = blocks_for(numel);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "modulated_act", [&] {
    if (numel <= INT32_MAX) {
      modulated_act_kernel<scalar_t, int32_t><<<blocks, kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), demod_ptr, noise_ptr, bias.data_ptr<scalar_t>(), static_cast<int32_t>(numel),
          static_cast<int32_t>(channels), static_cast<int32_t>(inner), static_cast<float>(negative_slope),
          static_cast<float>(gain));
    } else {
      modulated_act_kernel<scalar_t, int64_t><<<blocks, kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), demod_ptr, noise_ptr, bias.data_ptr<scalar_t>(), numel, channels, inner,
          static_cast<float>(negative_slope), static_cast<float>(gain));
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return x;
}

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x, int64_t up_y,
                          int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                          int64_t pad_y1, int64_t out_h, int64_t out_w) {
  auto out = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  if (out.numel() == 0) return out;

  UpFirDnParams p;
  p.planes = static_cast<int>(x.size(0) * x.size(1));
  p.in_h = static_cast<int>(x.size(2));
  p.in_w = static_cast<int>(x.size(3));
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.kh = static_cast<int>(kernel.size(0));
  p.kw = static_cast<int>(kernel.size(1));
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.pad_x0 = static_cast<int>(pad_x0);
  p.pad_y0 = static_cast<int>(pad_y0);

  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool square = up_x == up_y && down_x == down_y;
  const bool k4 = p.kh == 4 && p.kw == 4;

  if (square && k4 && up_x == 2 && down_x == 1) {
    launch_tiled<2, 1, 4, 4, 32, 32>(out, x, kernel, p, stream);  // ToRGB skip / Upsample
  } else if (square && k4 && up_x == 1 && down_x == 1) {
    launch_tiled<1, 1, 4, 4, 32, 32>(out, x, kernel, p, stream);  // Blur after transposed conv
  } else if (square && k4 && up_x == 1 && down_x == 2) {
    launch_tiled<1, 2, 4, 4, 16, 16>(out, x, kernel, p, stream);  // Blur before strided conv
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_generic", [&] {
      upfirdn2d_generic_kernel<scalar_t><<<blocks_for(out.numel()), kThreads, 0, stream>>>(
          out.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), kernel.data_ptr<scalar_t>(), p);
    });
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}
