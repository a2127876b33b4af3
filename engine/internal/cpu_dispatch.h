// MOECAST_AVX2_CLONES: compile a hot loop twice, for AVX2 and for the
// baseline, and pick one at load time (GCC's target_clones ifunc).
//
// Under ThreadSanitizer the ifunc resolver runs before the sanitizer's
// runtime is initialised and crashes the process at load, so sanitizer
// builds get the baseline version only.
#ifndef MOECAST_ENGINE_INTERNAL_CPU_DISPATCH_H_
#define MOECAST_ENGINE_INTERNAL_CPU_DISPATCH_H_

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define MOECAST_AVX2_CLONES
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define MOECAST_AVX2_CLONES
#endif
#endif

#ifndef MOECAST_AVX2_CLONES
#define MOECAST_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#endif

#endif  // MOECAST_ENGINE_INTERNAL_CPU_DISPATCH_H_
