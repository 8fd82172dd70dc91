/* Command-line driver of the engine for tests (built natively, also under ASan+UBSan).
 *
 *   spnn_tool check FILE...       load each file (and run it once if it loads); one line
 *                                 per file: "<status>\t<message>\t<file>"
 *   spnn_tool run MODEL THREADS IN.bin OUT.bin [REPEAT]
 *                                 inputs: the float32 inputs concatenated in input order;
 *                                 writes the outputs concatenated; prints the median time
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../include/pysparse.h"

static uint8_t* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t* data = (uint8_t*)malloc(n > 0 ? (size_t)n : 1);
  if (data && n > 0 && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *size = n > 0 ? (size_t)n : 0;
  return data;
}

static size_t elements(const int32_t* dims, int ndim) {
  size_t n = 1;
  for (int d = 0; d < ndim; d++) n *= (size_t)dims[d];
  return n;
}

static int check(int argc, char** argv) {
  for (int i = 0; i < argc; i++) {
    size_t size;
    uint8_t* data = read_file(argv[i], &size);
    if (!data) {
      printf("-1\tcannot read\t%s\n", argv[i]);
      continue;
    }
    char err[SPNN_ERROR_MESSAGE_SIZE];
    spnn_model* m = NULL;
    spnn_status st = spnn_load(data, size, 2, &m, err, sizeof err);
    free(data);
    if (st == SPNN_OK) {
      spnn_wake_threads(m);
      st = spnn_run(m);
      snprintf(err, sizeof err, "%s", spnn_error(m));
      spnn_free(m);
    }
    printf("%d\t%s\t%s\n", (int)st, err, argv[i]);
  }
  return 0;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static int run(char** argv, int argc) {
  size_t size, in_size;
  uint8_t* data = read_file(argv[0], &size);
  uint8_t* in = read_file(argv[2], &in_size);
  int threads = atoi(argv[1]);
  int repeat = argc > 4 ? atoi(argv[4]) : 1;
  if (!data || !in || repeat < 1 || repeat > 1000) {
    fprintf(stderr, "cannot read %s or %s\n", argv[0], argv[2]);
    free(data);
    free(in);
    return 2;
  }
  char err[SPNN_ERROR_MESSAGE_SIZE];
  spnn_model* m = NULL;
  spnn_status st = spnn_load(data, size, threads, &m, err, sizeof err);
  free(data);
  if (st != SPNN_OK) {
    fprintf(stderr, "load: status %d: %s\n", (int)st, err);
    free(in);
    return 1;
  }
  size_t pos = 0;
  int32_t dims[6];
  for (int i = 0; i < spnn_num_inputs(m); i++) {
    size_t n = elements(dims, spnn_input_shape(m, i, dims)) * 4;
    if (pos + n > in_size) {
      fprintf(stderr, "input file too short\n");
      free(in);
      spnn_free(m);
      return 2;
    }
    memcpy(spnn_input_data(m, i), in + pos, n);
    pos += n;
  }
  free(in);
  double times[1000];
  for (int r = 0; r < repeat; r++) {
    double t0 = now_ms();
    spnn_run(m);
    times[r] = now_ms() - t0;
  }
  qsort(times, (size_t)repeat, sizeof times[0], cmp_double);
  FILE* f = fopen(argv[3], "wb");
  if (!f) {
    spnn_free(m);
    return 2;
  }
  for (int i = 0; i < spnn_num_outputs(m); i++) {
    size_t n = elements(dims, spnn_output_shape(m, i, dims));
    fwrite(spnn_output_data(m, i), 4, n, f);
  }
  fclose(f);
  printf("median_ms %.4f\n", times[repeat / 2]);
  spnn_free(m);
  return 0;
}

int main(int argc, char** argv) {
  if (argc >= 2 && strcmp(argv[1], "check") == 0) return check(argc - 2, argv + 2);
  if (argc >= 6 && strcmp(argv[1], "run") == 0) return run(argv + 2, argc - 2);
  fprintf(stderr, "usage: spnn_tool check FILE... | run MODEL THREADS IN.bin OUT.bin [REPEAT]\n");
  return 2;
}
