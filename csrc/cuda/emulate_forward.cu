// The CPU emulation of the forward kernels (tests only; see emulate_gemm in gemm.cuh).
#include "gemm.cuh"

namespace convgru {

namespace {
template <Math kMath> void emulate_forward_math(Kernel kernel, const Params& p) {
  switch (kernel) {
    case Kernel::FwdRZ: return emulate_gemm<kMath, Kernel::FwdRZ>(p);
    case Kernel::FwdN: return emulate_gemm<kMath, Kernel::FwdN>(p);
    case Kernel::FwdAfter: return emulate_gemm<kMath, Kernel::FwdAfter>(p);
    default: TORCH_CHECK(false, "convgru_ext internal error: kernel ", int(kernel), " is not a forward kernel");
  }
}
}  // namespace

void emulate_forward(Math math, Kernel kernel, const Params& p) {
  switch (math) {
    case Math::F16: return emulate_forward_math<Math::F16>(kernel, p);
    case Math::BF16: return emulate_forward_math<Math::BF16>(kernel, p);
    case Math::TF32: return emulate_forward_math<Math::TF32>(kernel, p);
    case Math::F32: return emulate_forward_math<Math::F32>(kernel, p);
    case Math::F64: return emulate_forward_math<Math::F64>(kernel, p);
  }
}

}  // namespace convgru
