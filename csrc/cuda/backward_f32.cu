// Backward kernels for float32 (see gemm.cuh): TF32 tensor cores, or exact fp32 FMA.
#include "gemm.cuh"

namespace convgru {

void launch_backward_f32(Math math, Kernel kernel, const Params& p, cudaStream_t stream) {
  TORCH_CHECK(math == Math::TF32 || math == Math::F32, "convgru_ext internal error: launch_backward_f32 got math ",
              int(math));
  if (math == Math::TF32) {
    launch_backward_kernel<Math::TF32>(kernel, p, stream);
  } else {
    launch_backward_kernel<Math::F32>(kernel, p, stream);
  }
}

}  // namespace convgru
