/* Times the depthwise kernels on the plane sizes of MobileNet-style models, and the KxK
 * convolution on first-layer shapes (one thread).
 *
 *   make -C wasm bench-dwconv-ab [BASELINE=REV]   (builds it and runs it on the benchmark Node)
 *
 * Prints per shape the best and the median time of ROUNDS rounds (each round runs the
 * kernel for about 0.3 ms) in microseconds, and GMAC/s from the best; 3x3 stride-2 shapes
 * whose rows can be read split by column parity also as that kernel ("split"). Built with
 * SPNN_BENCH_BASELINE, it also times another revision's kernels (symbols prefixed base_),
 * alternating with the working tree's round by round, and prints their ratio.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels.h"

#ifdef SPNN_BENCH_BASELINE
spnn_dwconv_ukernel base_spnn_dwconv_select(const spnn_dwconv_shape* s);
void base_spnn_f32_dwconv_split_rows_at(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                                        size_t row_begin, size_t row_end, const float* input_rows,
                                        size_t in_plane, const void* packed, float* output,
                                        float out_min, float out_max);
void base_spnn_conv_run(const spnn_conv_shape* s, const void* packed, size_t pixel_begin,
                        size_t pixel_end, const float* input, float* scratch, float* output,
                        float out_min, float out_max);
#define NUM_SYSTEMS 2
#else
#define NUM_SYSTEMS 1
#endif

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  unsigned c, h, k, s;
} shape;

/* Sorts each system's round times and prints the best, the median, GMAC/s from the best
 * and, with a baseline, the speed-ups. */
static void report(const char* label, double times[NUM_SYSTEMS][1000], int rounds, double macs) {
  for (int k = 0; k < NUM_SYSTEMS; k++) qsort(times[k], (size_t)rounds, sizeof(double), cmp_double);
  printf("%s  best %8.1f us  median %8.1f us  %5.2f GMAC/s", label, times[0][0], times[0][rounds / 2],
         macs / times[0][0] / 1e3);
  if (NUM_SYSTEMS > 1) {
    printf("  | baseline best %8.1f median %8.1f  speed-up best %.2fx median %.2fx",
           times[NUM_SYSTEMS - 1][0], times[NUM_SYSTEMS - 1][rounds / 2],
           times[NUM_SYSTEMS - 1][0] / times[0][0],
           times[NUM_SYSTEMS - 1][rounds / 2] / times[0][rounds / 2]);
  }
  printf("\n");
}

int main(int argc, char** argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 201;
  if (rounds < 1 || rounds > 1000) rounds = 201;
  static const shape shapes[] = {
      {32, 112, 3, 1}, {96, 112, 3, 2}, {144, 56, 3, 1}, {144, 56, 3, 2}, {192, 28, 3, 1},
      {192, 28, 3, 2}, {384, 14, 3, 1}, {576, 14, 3, 1}, {576, 14, 3, 2}, {960, 7, 3, 1},
      {32, 96, 5, 1},  {128, 24, 5, 1}, {256, 12, 5, 1}, {256, 6, 5, 1},  {48, 56, 5, 1},
      {96, 28, 5, 2},  {288, 14, 5, 1}, {288, 7, 5, 1},
  };
  static double times[NUM_SYSTEMS][1000];
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const shape* sh = &shapes[i];
    /* TF SAME padding */
    const unsigned out = (sh->h + sh->s - 1) / sh->s;
    const unsigned total = (out - 1) * sh->s + sh->k > sh->h ? (out - 1) * sh->s + sh->k - sh->h : 0;
    spnn_dwconv_shape s = {sh->c, sh->h, sh->h, out, out, sh->k, sh->k, sh->s, sh->s, 1, 1,
                           total / 2, total / 2};
    const size_t in_n = (size_t)sh->c * sh->h * sh->h + 64, out_n = (size_t)sh->c * out * out + 64;
    float* in = (float*)aligned_alloc(64, in_n * sizeof(float));
    float* o = (float*)aligned_alloc(64, out_n * sizeof(float));
    float* w = (float*)malloc((size_t)sh->c * sh->k * sh->k * sizeof(float));
    float* b = (float*)malloc(sh->c * sizeof(float));
    void* packed = aligned_alloc(64, (spnn_dwconv_packed_bytes(&s) + 63) & ~(size_t)63);
    for (size_t j = 0; j < in_n; j++) in[j] = (float)((j * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (size_t j = 0; j < (size_t)sh->c * sh->k * sh->k; j++) w[j] = (float)(j % 7) * 0.1f - 0.3f;
    for (size_t j = 0; j < sh->c; j++) b[j] = 0.01f * (float)j;
    spnn_dwconv_pack(&s, w, b, packed);
    spnn_dwconv_ukernel fns[NUM_SYSTEMS] = {
        spnn_dwconv_select(&s),
#ifdef SPNN_BENCH_BASELINE
        base_spnn_dwconv_select(&s),
#endif
    };
    spnn_dwconv_ukernel fn = fns[0];
    int reps = 1;
    for (;;) { /* calibrate: reps per round of about 0.3 ms */
      double t0 = now_us();
      for (int r = 0; r < reps; r++) fn(&s, 0, sh->c, in, packed, o, 0.0f, 6.0f);
      if (now_us() - t0 > 300 || reps > 1 << 20) break;
      reps *= 2;
    }
    for (int r = 0; r < rounds; r++) {
      for (int k = 0; k < NUM_SYSTEMS; k++) {
        double t0 = now_us();
        for (int q = 0; q < reps; q++) fns[k](&s, 0, sh->c, in, packed, o, 0.0f, 6.0f);
        times[k][r] = (now_us() - t0) / reps;
      }
    }
    char label[64];
    snprintf(label, sizeof label, "%4ux%3ux%-3u k%u s%u", sh->c, sh->h, sh->h, sh->k, sh->s);
    report(label, times, rounds, (double)sh->c * out * out * sh->k * sh->k);
    if (spnn_dwconv_reads_split(&s)) {
      /* the same layer reading rows stored as their even, then their odd columns, as the
       * fused blocks give it (the input's order does not change the time) */
      const size_t plane = (size_t)sh->h * sh->h;
      for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < NUM_SYSTEMS; k++) {
          double t0 = now_us();
          for (int q = 0; q < reps; q++) {
            if (k == 0)
              spnn_f32_dwconv_split_rows_at(&s, 0, sh->c, 0, out, in, plane, packed, o, 0.0f, 6.0f);
#ifdef SPNN_BENCH_BASELINE
            else
              base_spnn_f32_dwconv_split_rows_at(&s, 0, sh->c, 0, out, in, plane, packed, o, 0.0f,
                                                 6.0f);
#endif
          }
          times[k][r] = (now_us() - t0) / reps;
        }
      }
      snprintf(label, sizeof label, "%4ux%3ux%-3u k%u s%u split", sh->c, sh->h, sh->h, sh->k, sh->s);
      report(label, times, rounds, (double)sh->c * out * out * sh->k * sh->k);
    }
    free(in);
    free(o);
    free(w);
    free(b);
    free(packed);
  }
  /* KxK convolutions: first layers (3 input channels, 3x3 stride 2, TF SAME padding) */
  static const unsigned convs[][3] = {{224, 32, 0}, {256, 24, 0}, {192, 32, 0}};
  for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
    const unsigned h = convs[i][0], cout = convs[i][1], out = h / 2;
    spnn_conv_shape s = {3, h, h, cout, out, out, 3, 3, 2, 2, 1, 1, 0, 0, 1};
    const size_t in_n = (size_t)3 * h * h + 64, out_n = (size_t)cout * out * out + 64;
    float* in = (float*)aligned_alloc(64, in_n * sizeof(float));
    float* o = (float*)aligned_alloc(64, out_n * sizeof(float));
    float* w = (float*)malloc((size_t)cout * 27 * sizeof(float));
    float* scratch = (float*)aligned_alloc(64, (spnn_conv_scratch_bytes(&s) + 63) & ~(size_t)63);
    void* packed = aligned_alloc(64, (spnn_conv_packed_bytes(&s) + 63) & ~(size_t)63);
    for (size_t j = 0; j < in_n; j++) in[j] = (float)((j * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (size_t j = 0; j < (size_t)cout * 27; j++) w[j] = (float)(j % 7) * 0.1f - 0.3f;
    spnn_conv_pack(&s, w, NULL, packed);
    const size_t pixels = (size_t)out * out;
    int reps = 1;
    for (;;) {
      double t0 = now_us();
      for (int r = 0; r < reps; r++) spnn_conv_run(&s, packed, 0, pixels, in, scratch, o, 0.0f, 6.0f);
      if (now_us() - t0 > 300 || reps > 1 << 20) break;
      reps *= 2;
    }
    for (int r = 0; r < rounds; r++) {
      for (int k = 0; k < NUM_SYSTEMS; k++) {
        double t0 = now_us();
        for (int q = 0; q < reps; q++) {
          if (k == 0) spnn_conv_run(&s, packed, 0, pixels, in, scratch, o, 0.0f, 6.0f);
#ifdef SPNN_BENCH_BASELINE
          else base_spnn_conv_run(&s, packed, 0, pixels, in, scratch, o, 0.0f, 6.0f);
#endif
        }
        times[k][r] = (now_us() - t0) / reps;
      }
    }
    char label[64];
    snprintf(label, sizeof label, "conv 3x%ux%u->%u k3 s2", h, h, cout);
    report(label, times, rounds, (double)pixels * cout * 27);
    free(in);
    free(o);
    free(w);
    free(scratch);
    free(packed);
  }
  return 0;
}
