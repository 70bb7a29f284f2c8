// The two cores' f32 FMA peak on 256-bit registers: twelve independent chains of FMAs per
// thread (enough to cover the FMA latency on both ports), one thread per core, no memory
// traffic. What the encoder's products are measured against in README's performance section.
//   gcc -O2 -mavx2 -mfma -pthread scripts/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#define THREADS 2
#define STEPS 400000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *chains(void *result) {
  __m256 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
  __m256 x = _mm256_set1_ps(1.0000001f), y = _mm256_set1_ps(0.9999999f);
  for (long n = 0; n < STEPS; n++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  float sum = 0, lanes[8];
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(lanes, acc[i]);
    sum += lanes[0];
  }
  *(float *)result = sum;  // kept, so the loop is not optimised away
  return NULL;
}

int main(void) {
  pthread_t threads[THREADS];
  float results[THREADS];
  double start = now();
  for (int t = 0; t < THREADS; t++) pthread_create(&threads[t], NULL, chains, &results[t]);
  for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
  double flops = 2.0 * 8 * 12 * STEPS * THREADS;
  printf("%.1f GFLOP/s f32 FMA peak, %d threads, 256-bit (%g)\n", flops / (now() - start) / 1e9,
         THREADS, results[0]);
  return 0;
}
