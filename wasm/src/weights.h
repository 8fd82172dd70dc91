/* The WEIGHTS section: validate every descriptor and blob, decode to f32 (dense) or to
 * absolute column indices plus f32 values (sparse). */
#ifndef PYSPARSE_WEIGHTS_H
#define PYSPARSE_WEIGHTS_H

#include "engine.h"

typedef struct spnn_weight {
  uint32_t rows, cols;
  float* dense;        /* rows*cols, for dense encodings */
  spnn_sparse* sparse; /* for sparse encodings */
  int claimed;         /* set when a constant tensor takes it */
} spnn_weight;

/* Decodes the whole section into *out (num_weights entries, allocated here). */
spnn_status spnn_decode_weights(spnn_model* m, const uint8_t* sec, uint32_t len,
                                spnn_weight** out, uint32_t* num_weights);

#endif
