/* libFuzzer target: any bytes through spnn_load, and spnn_run on whatever loads (when the
 * model's work is small enough to keep each input fast). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../src/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char err[SPNN_ERROR_MESSAGE_SIZE];
  spnn_model* m = NULL;
  spnn_status st = spnn_load(data, size, 1, &m, err, sizeof err);
  if (st != SPNN_OK) {
    if (m != NULL || strlen(err) == 0) __builtin_trap(); /* every failure says why */
    return 0;
  }
  if (m->total_macs < 2e7) {
    for (int i = 0; i < spnn_num_inputs(m); i++) {
      int32_t dims[6];
      int nd = spnn_input_shape(m, i, dims);
      size_t n = 1;
      for (int d = 0; d < nd; d++) n *= (size_t)dims[d];
      float* x = spnn_input_data(m, i);
      for (size_t k = 0; k < n; k++) x[k] = (float)((k * 2654435761u) % 1000) / 500.0f - 1.0f;
    }
    spnn_run(m);
  }
  spnn_free(m);
  return 0;
}
