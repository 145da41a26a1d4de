// Test-only entry points to the primitives' CPU implementations (declared in convgru.h).
#include "gemm.cuh"

#include <atomic>

namespace convgru {

namespace {
std::atomic<int> schedule{static_cast<int>(EmulatedSchedule::Late)};
}  // namespace

void set_emulated_schedule(EmulatedSchedule s) { schedule.store(static_cast<int>(s)); }
EmulatedSchedule emulated_schedule() { return static_cast<EmulatedSchedule>(schedule.load()); }

void emulate_ldmatrix_x4(const uint16_t* smem, const int64_t* row_offsets, bool trans, uint32_t* out) {
  const uint16_t* rows[32];
  for (int l = 0; l < 32; ++l) rows[l] = smem + row_offsets[l];
  ldmatrix_x4_host(rows, trans, reinterpret_cast<uint32_t(*)[4]>(out));
}

void emulate_mma_sync(Math math, const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  auto* A = reinterpret_cast<const uint32_t(*)[4]>(a);
  auto* B = reinterpret_cast<const uint32_t(*)[2]>(b);
  auto* Cm = reinterpret_cast<const float(*)[4]>(c);
  auto* D = reinterpret_cast<float(*)[4]>(d);
  switch (math) {
    case Math::F16: return mma_sync_host<Math::F16>(D, A, B, Cm);
    case Math::BF16: return mma_sync_host<Math::BF16>(D, A, B, Cm);
    case Math::TF32: return mma_sync_host<Math::TF32>(D, A, B, Cm);
    default: TORCH_CHECK(false, "convgru_ext: mma.sync takes math f16, bf16 or tf32; got ", int(math));
  }
}

namespace {
template <Math kMath, Kernel kKernel> void cta_product(const void* a, const void* b, double* out) {
  using K = Tile<kMath, kKernel>;
  using T = typename K::T;
  using Body = EmulatedWarp<kMath, kKernel>;
  std::vector<double> buffer(K::kSmemBytes / sizeof(double) + 1);
  unsigned char* smem = reinterpret_cast<unsigned char*>(buffer.data());
  T* As = K::smem_a(smem, 0);
  T* Bs = K::smem_b(smem, 0);
  for (int r = 0; r < K::BM; ++r)
    for (int k = 0; k < K::BK; ++k) As[K::a_index(r, k)] = static_cast<const T*>(a)[r * K::BK + k];
  for (int k = 0; k < K::BK; ++k)
    for (int n = 0; n < K::BNT; ++n) Bs[K::b_index(k, n)] = static_cast<const T*>(b)[k * K::BNT + n];
  std::vector<Body> warps(K::kWarps);
  for (int w = 0; w < K::kWarps; ++w) {
    Body& body = warps[w];
    body.warp = w;
    body.acc.start(w, body.x);
    body.compute(smem, 0);
    body.acc.for_each(w, body.x, [&](int, int row, int ch, const typename K::A* v) {
      for (int g = 0; g < K::NG; ++g) out[row * K::BNT + g * K::BN + ch] = v[g];
    });
  }
}

template <Math kMath> void cta_product_math(Kernel kernel, const void* a, const void* b, double* out) {
  switch (kernel) {
    case Kernel::FwdRZ: return cta_product<kMath, Kernel::FwdRZ>(a, b, out);
    case Kernel::FwdN: return cta_product<kMath, Kernel::FwdN>(a, b, out);
    case Kernel::FwdAfter: return cta_product<kMath, Kernel::FwdAfter>(a, b, out);
    default: TORCH_CHECK(false, "convgru_ext: emulate_cta_product takes a forward kernel; got ", int(kernel));
  }
}
}  // namespace

void emulate_cta_product(Math math, Kernel kernel, const void* a, const void* b, double* out) {
  switch (math) {
    case Math::F16: return cta_product_math<Math::F16>(kernel, a, b, out);
    case Math::BF16: return cta_product_math<Math::BF16>(kernel, a, b, out);
    case Math::TF32: return cta_product_math<Math::TF32>(kernel, a, b, out);
    case Math::F32: return cta_product_math<Math::F32>(kernel, a, b, out);
    case Math::F64: return cta_product_math<Math::F64>(kernel, a, b, out);
  }
}

}  // namespace convgru
