// What the CPU can do, asked once at run time: the kernels that have an AVX2 path (the
// sparsifier's pass, the parameter digest) choose it here, so that one binary runs everywhere.
#ifndef REGTOPK_COMMON_CPU_H_
#define REGTOPK_COMMON_CPU_H_

namespace regtopk {

// True where the CPU executes AVX2 (x86-64 with GCC or Clang); false elsewhere.
inline bool CpuHasAvx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
#else
  return false;
#endif
}

}  // namespace regtopk

#endif  // REGTOPK_COMMON_CPU_H_
