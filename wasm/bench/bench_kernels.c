/* Kernel benchmark: SpMM and dense GEMM on MobileNetV2-224's 1x1 convolution shapes.
 *
 * Single thread. For every repeat, every case runs every system in turn (interleaved), so
 * machine noise spreads evenly; the runner reports medians. A mul/add (or FMA) probe in
 * the same run gives the machine's SIMD128 peak. Writes one JSON object to stdout.
 *
 *   bench_kernels [repeats] [target_ms]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../src/kernels.h"

#ifdef __EMSCRIPTEN__
#include <emscripten.h>
static double now_ms(void) { return emscripten_get_now(); }
#else
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}
#endif

typedef struct layer_shape { int hw, cin, cout; } layer_shape;

static const layer_shape kShapes[] = {
    {112, 32, 16}, {112, 16, 96}, {56, 24, 144}, {56, 144, 24},  {28, 32, 192},
    {28, 192, 32}, {14, 64, 384}, {14, 384, 64}, {14, 96, 576},  {14, 576, 96},
    {7, 160, 960}, {7, 960, 160}, {7, 320, 1280},
};
#define NUM_SHAPES (sizeof(kShapes) / sizeof(kShapes[0]))
static const int kSparsities[] = {0, 50, 70, 80, 90};
#define NUM_SPARSITIES (sizeof(kSparsities) / sizeof(kSparsities[0]))

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state >> 16);
}
static float rng_weight(void) { return ((float)(rng() % 2001) - 1000.0f) / 4000.0f + 1e-3f; }

static void* xalloc(size_t bytes) {
  void* p = aligned_alloc(16, (bytes + 15) & ~(size_t)15);
  if (p == NULL) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

/* A sparse weight in the decoded format: `keep` of the (rows/block) x cols block grid
 * are stored, chosen uniformly (exactly that many). */
typedef struct sparse_case {
  spnn_spmm_weights w;
  void* buffer;
  size_t nnz;
} sparse_case;

static void make_sparse(int rows, int cols, int block, int sparsity, int pixels,
                        const float* bias, sparse_case* out) {
  const int grid_rows = rows / block;
  const size_t cells = (size_t)grid_rows * cols;
  const size_t keep = (size_t)llround((double)cells * (100 - sparsity) / 100.0);
  unsigned char* mask = calloc(cells, 1);
  size_t* order = malloc(cells * sizeof(size_t));
  for (size_t i = 0; i < cells; i++) order[i] = i;
  for (size_t i = 0; i < keep; i++) { /* partial Fisher-Yates */
    const size_t j = i + rng() % (cells - i);
    const size_t t = order[i];
    order[i] = order[j];
    order[j] = t;
    mask[order[i]] = 1;
  }
  uint32_t* counts = calloc(grid_rows, sizeof(uint32_t));
  uint32_t* columns = malloc((keep + 1) * sizeof(uint32_t));
  float* values = malloc((keep * block + 1) * sizeof(float));
  size_t nc = 0, nv = 0;
  for (int g = 0; g < grid_rows; g++) {
    for (int c = 0; c < cols; c++) {
      if (!mask[(size_t)g * cols + c]) continue;
      counts[g]++;
      columns[nc++] = (uint32_t)c;
      for (int r = 0; r < block; r++) values[nv++] = rng_weight();
    }
  }
  out->nnz = nv;
  out->buffer = xalloc(spnn_spmm_packed_bytes(rows, block, (uint32_t)nc));
  if (spnn_spmm_pack(rows, cols, block, counts, columns, values, bias, pixels, out->buffer,
                     &out->w) != 0) {
    fprintf(stderr, "pack failed\n");
    exit(1);
  }
  free(mask);
  free(order);
  free(counts);
  free(columns);
  free(values);
}

/* One benchmarked system on one layer. */
typedef struct system {
  char kind[16]; /* "dense", "spmm", "spmm_block4" */
  int sparsity;
  double flops;  /* effective: 2 x pixels x nonzeros (sparse), 2 x pixels x rows x cols */
  int iters;
  double times_ms[64];
  sparse_case sparse;
  void* dense_packed;
} system_t;

typedef struct layer {
  layer_shape shape;
  int pixels;
  float *input, *output, *bias;
  int num_systems;
  system_t systems[1 + 2 * NUM_SPARSITIES];
} layer;

static void run_system(const layer* l, const system_t* s) {
  if (s->dense_packed != NULL) {
    spnn_gemm_run(l->shape.cout, l->shape.cin, s->dense_packed, 0, l->pixels, l->input,
                  l->pixels, l->output, l->pixels, 0.0f, 6.0f);
  } else {
    spnn_spmm_run(&s->sparse.w, 0, l->pixels, l->input, l->output, 0.0f, 6.0f);
  }
}

static double time_system(const layer* l, const system_t* s, int iters) {
  const double t0 = now_ms();
  for (int i = 0; i < iters; i++) run_system(l, s);
  return (now_ms() - t0) / iters;
}

/* The machine's SIMD128 peak in GFLOP/s (bench/peak_probe.c, built like the kernels). */
double spnn_bench_peak_gflops(double (*now)(void), double target_ms);

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? atoi(argv[1]) : 7;
  const double target_ms = argc > 2 ? atof(argv[2]) : 4.0;
  if (repeats < 1 || repeats > 64) {
    fprintf(stderr, "repeats must be 1..64\n");
    return 2;
  }
  static layer layers[NUM_SHAPES];
  for (size_t li = 0; li < NUM_SHAPES; li++) {
    layer* l = &layers[li];
    l->shape = kShapes[li];
    l->pixels = l->shape.hw * l->shape.hw;
    const int cin = l->shape.cin, cout = l->shape.cout, p = l->pixels;
    l->input = xalloc(sizeof(float) * cin * p);
    l->output = xalloc(sizeof(float) * cout * p);
    l->bias = xalloc(sizeof(float) * cout);
    for (int i = 0; i < cin * p; i++) l->input[i] = rng_weight();
    for (int i = 0; i < cout; i++) l->bias[i] = rng_weight();

    system_t* d = &l->systems[l->num_systems++];
    memset(d, 0, sizeof(*d));
    strcpy(d->kind, "dense");
    float* w = xalloc(sizeof(float) * cout * cin);
    for (int i = 0; i < cout * cin; i++) w[i] = rng_weight();
    d->dense_packed = xalloc(spnn_gemm_packed_bytes(cout, cin));
    spnn_gemm_pack(cout, cin, w, l->bias, d->dense_packed);
    free(w);
    d->flops = 2.0 * p * cout * cin;
    for (int block = 1; block <= 4; block += 3) {
      for (size_t si = 0; si < NUM_SPARSITIES; si++) {
        system_t* s = &l->systems[l->num_systems++];
        memset(s, 0, sizeof(*s));
        strcpy(s->kind, block == 1 ? "spmm" : "spmm_block4");
        s->sparsity = kSparsities[si];
        make_sparse(cout, cin, block, s->sparsity, p, l->bias, &s->sparse);
        s->flops = 2.0 * p * (double)s->sparse.nnz;
      }
    }
    /* Calibrate: iterations for about target_ms per measurement. */
    for (int si = 0; si < l->num_systems; si++) {
      system_t* s = &l->systems[si];
      run_system(l, s);
      int iters = 1;
      double ms;
      while ((ms = time_system(l, s, iters) * iters) < target_ms / 4 && iters < (1 << 20)) {
        iters *= 2;
      }
      s->iters = (int)ceil(iters * target_ms / (ms > 1e-3 ? ms : 1e-3));
      if (s->iters < 1) s->iters = 1;
    }
  }

  double peaks[64];
  for (int r = 0; r < repeats; r++) {
    peaks[r] = spnn_bench_peak_gflops(now_ms, target_ms);
    for (size_t li = 0; li < NUM_SHAPES; li++) {
      layer* l = &layers[li];
      for (int si = 0; si < l->num_systems; si++) {
        system_t* s = &l->systems[si];
        s->times_ms[r] = time_system(l, s, s->iters);
      }
    }
  }

  printf("{\"variant\": \"%s\", \"repeats\": %d, \"peak_gflops\": [", spnn_kernels_variant(),
         repeats);
  for (int r = 0; r < repeats; r++) printf("%s%.3f", r ? ", " : "", peaks[r]);
  printf("],\n \"cases\": [\n");
  int first = 1;
  for (size_t li = 0; li < NUM_SHAPES; li++) {
    const layer* l = &layers[li];
    for (int si = 0; si < l->num_systems; si++) {
      const system_t* s = &l->systems[si];
      printf("%s  {\"hw\": %d, \"cin\": %d, \"cout\": %d, \"kind\": \"%s\", \"sparsity\": %d, "
             "\"flops\": %.0f, \"times_ms\": [",
             first ? "" : ",\n", l->shape.hw, l->shape.cin, l->shape.cout, s->kind,
             s->sparsity, s->flops);
      for (int r = 0; r < repeats; r++) printf("%s%.6f", r ? ", " : "", s->times_ms[r]);
      printf("]}");
      first = 0;
    }
  }
  printf("\n]}\n");
  return 0;
}
