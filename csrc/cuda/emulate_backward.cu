// The CPU emulation of the backward kernels (tests only; see emulate_gemm in gemm.cuh).
#include "gemm.cuh"

namespace convgru {

namespace {
template <Math kMath> void emulate_backward_math(Kernel kernel, const Params& p) {
  switch (kernel) {
    case Kernel::BwdInit: return emulate_backward_init<typename MathCfg<kMath>::T>(p);
    case Kernel::BwdN: return emulate_gemm<kMath, Kernel::BwdN>(p);
    case Kernel::BwdRZ: return emulate_gemm<kMath, Kernel::BwdRZ>(p);
    case Kernel::BwdAfter: return emulate_gemm<kMath, Kernel::BwdAfter>(p);
    default: TORCH_CHECK(false, "convgru_ext internal error: kernel ", int(kernel), " is not a backward kernel");
  }
}
}  // namespace

void emulate_backward(Math math, Kernel kernel, const Params& p) {
  switch (math) {
    case Math::F16: return emulate_backward_math<Math::F16>(kernel, p);
    case Math::BF16: return emulate_backward_math<Math::BF16>(kernel, p);
    case Math::TF32: return emulate_backward_math<Math::TF32>(kernel, p);
    case Math::F32: return emulate_backward_math<Math::F32>(kernel, p);
    case Math::F64: return emulate_backward_math<Math::F64>(kernel, p);
  }
}

}  // namespace convgru
