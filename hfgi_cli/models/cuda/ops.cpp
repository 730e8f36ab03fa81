// Python bindings and input checks for hfgi's StyleGAN2 CUDA ops (kernels in ops_kernel.cu).

#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

at::Tensor fused_bias_act_cuda(const at::Tensor& x, const at::Tensor& bias, double negative_slope,
                               double scale);
at::Tensor modulated_act_cuda(at::Tensor& x, const at::Tensor& demod, const at::Tensor& noise,
                              const at::Tensor& bias, double negative_slope, double gain);
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x, int64_t up_y,
                          int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                          int64_t pad_y1, int64_t out_h, int64_t out_w);

namespace {

// Build messages as one std::string: TORCH_CHECK with several streamed integer or IntArrayRef
// arguments crashed (SIGSEGV) instead of raising on the GPU machine's torch build.
std::string sizes_str(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

void check_input(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, ": ", name, " must be a CUDA tensor (got ", t.device(), ")");
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous() first)");
  const auto dt = t.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kHalf || dt == at::kBFloat16, op, ": ", name,
              " must be float32, float16 or bfloat16 (got ", dt, ")");
}

void check_pair(const at::Tensor& x, const at::Tensor& other, const char* op, const char* name) {
  TORCH_CHECK(other.device() == x.device(), op, ": ", name, " is on ", other.device(), " but x is on ",
              x.device());
  TORCH_CHECK(other.scalar_type() == x.scalar_type(), op, ": ", name, " dtype ", other.scalar_type(),
              " does not match x dtype ", x.scalar_type());
}

constexpr int64_t kMaxInt = std::numeric_limits<int>::max();

}  // namespace

at::Tensor fused_bias_act(const at::Tensor& x, const at::Tensor& bias, double negative_slope, double scale) {
  constexpr const char* op = "fused_bias_act";
  check_input(x, op, "x");
  check_input(bias, op, "bias");
  check_pair(x, bias, op, "bias");
  TORCH_CHECK(x.dim() >= 2, std::string(op) + ": x must be [N, C, ...], got " + std::to_string(x.dim()) + "-D");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(1),
              std::string(op) + ": bias must be [C] with C = x.size(1) = " + std::to_string(x.size(1)) +
                  ", got " + sizes_str(bias.sizes()));
  const c10::cuda::CUDAGuard guard(x.device());
  return fused_bias_act_cuda(x, bias, negative_slope, scale);
}

at::Tensor modulated_act(at::Tensor x, const at::Tensor& demod, const at::Tensor& noise, const at::Tensor& bias,
                         double negative_slope, double gain) {
  constexpr const char* op = "modulated_act";
  check_input(x, op, "x");
  check_input(bias, op, "bias");
  check_pair(x, bias, op, "bias");
  TORCH_CHECK(x.dim() == 4, std::string(op) + ": x must be 4-D NCHW");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == x.size(1), std::string(op) + ": bias must be [C]");
  for (const at::Tensor* t : {&demod, &noise}) {
    if (t->numel() == 0) continue;
    TORCH_CHECK(t->is_cuda() && t->device() == x.device() && t->is_contiguous() && t->scalar_type() == at::kFloat,
                std::string(op) + ": demod and noise must be contiguous float32 tensors on x's device");
  }
  TORCH_CHECK(demod.numel() == 0 || demod.numel() == x.size(0) * x.size(1), std::string(op) + ": demod must be [N, C]");
  TORCH_CHECK(noise.numel() == 0 || noise.numel() == x.size(2) * x.size(3), std::string(op) + ": noise must be [H, W]");
  TORCH_CHECK(x.numel() <= kMaxInt * 64LL, std::string(op) + ": tensor too large");
  const c10::cuda::CUDAGuard guard(x.device());
  return modulated_act_cuda(x, demod, noise, bias, negative_slope, gain);
}

at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& kernel, int64_t up_x, int64_t up_y,
                     int64_t down_x, int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0,
                     int64_t pad_y1) {
  constexpr const char* op = "upfirdn2d";
  check_input(x, op, "x");
  check_input(kernel, op, "kernel");
  check_pair(x, kernel, op, "kernel");
  TORCH_CHECK(x.dim() == 4, std::string(op) + ": x must be 4-D NCHW, got " + std::to_string(x.dim()) + "-D");
  TORCH_CHECK(kernel.dim() == 2 && kernel.numel() > 0,
              std::string(op) + ": kernel must be a non-empty 2-D [kh, kw] tensor, got " + sizes_str(kernel.sizes()));
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1,
              std::string(op) + ": up/down factors must be >= 1");
  const int64_t in_h = x.size(2), in_w = x.size(3);
  const int64_t kh = kernel.size(0), kw = kernel.size(1);
  const int64_t out_h = (in_h * up_y + pad_y0 + pad_y1 - kh) / down_y + 1;
  const int64_t out_w = (in_w * up_x + pad_x0 + pad_x1 - kw) / down_x + 1;
  TORCH_CHECK(in_h * up_y + pad_y0 + pad_y1 >= kh && in_w * up_x + pad_x0 + pad_x1 >= kw,
              std::string(op) + ": padded/upsampled input (" + std::to_string(in_h * up_y + pad_y0 + pad_y1) + " x " +
                  std::to_string(in_w * up_x + pad_x0 + pad_x1) + ") is smaller than the kernel (" +
                  std::to_string(kh) + " x " + std::to_string(kw) + ")");
  // Kernels use 32-bit maths for coordinates within a plane and for the plane count.
  TORCH_CHECK(x.size(0) * x.size(1) <= kMaxInt && in_h * in_w <= kMaxInt && out_h * out_w <= kMaxInt &&
                  in_h * up_y + std::abs(pad_y0) + kh <= kMaxInt && in_w * up_x + std::abs(pad_x0) + kw <= kMaxInt,
              std::string(op) + ": tensor too large for this kernel");
  const c10::cuda::CUDAGuard guard(x.device());
  return upfirdn2d_cuda(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, out_h, out_w);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "hfgi StyleGAN2 CUDA ops: fused bias + leaky ReLU, upfirdn2d";
  m.def("fused_bias_act", &fused_bias_act, "leaky_relu(x + bias[c], negative_slope) * scale",
        py::arg("x"), py::arg("bias"), py::arg("negative_slope"), py::arg("scale"));
  m.def("modulated_act", &modulated_act, "in place: leaky_relu(x * demod[n,c] + noise[h,w] + bias[c]) * gain",
        py::arg("x"), py::arg("demod"), py::arg("noise"), py::arg("bias"), py::arg("negative_slope"),
        py::arg("gain"));
  m.def("upfirdn2d", &upfirdn2d, "upsample (zero insertion), pad, FIR filter (true convolution), downsample",
        py::arg("x"), py::arg("kernel"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"),
        py::arg("pad_x0"), py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"));
}
