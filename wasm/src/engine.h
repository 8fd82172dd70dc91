/* The engine's internal view of a loaded model: tensors, ops, memory, threads.
 *
 * Loading (loader.c) parses and validates the file, decodes weights (weights.c), and asks
 * each op family to prepare its ops (check shapes, pick a kernel, pack weights). Running
 * (executor.c) calls each op's run function in order; nothing is allocated or checked
 * there that could have been done at load.
 */
#ifndef PYSPARSE_ENGINE_H
#define PYSPARSE_ENGINE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "../include/pysparse.h"
#include "alloc.h"
#include "opset.gen.h"
#include "threadpool.h"

#define SPNN_MAX_NDIM 6
#define SPNN_MAX_ELEMENTS (1u << 28) /* per tensor, and for all constants together */
#define SPNN_ABSENT 0xFFFFFFFFu
#define SPNN_MAX_ATTRS 16
enum { SPNN_KIND_ACTIVATION = 0, SPNN_KIND_CONSTANT = 1, SPNN_KIND_INPUT = 2 };

/* A sparse weight matrix decoded from the file: per row block the absolute indices of its
 * stored columns, and the values (block rows interleaved per column, as stored). */
typedef struct spnn_sparse {
  uint32_t block, rows, cols;
  uint32_t num_blocks, nnz, num_steps;
  uint32_t* counts;   /* [num_blocks] */
  uint32_t* columns;  /* [num_steps] */
  float* values;      /* [nnz] */
} spnn_sparse;

typedef struct spnn_tensor {
  uint8_t kind;
  uint8_t ndim;
  int32_t dims[SPNN_MAX_NDIM];
  uint32_t count;     /* elements */
  const char* name;
  uint32_t weight;    /* constants: index into the WEIGHTS table */
  uint32_t offset;    /* activations and inputs: arena byte offset */
  float* data;        /* arena + offset (graph inputs: their own buffer), or the decoded
                         constant (NULL while sparse-only) */
  spnn_sparse* sparse;/* constants stored sparse */
  int32_t producer;   /* op index writing it; -1 for inputs and constants */
  int32_t last_use;   /* last op index reading it (num_ops for graph outputs) */
  int raw_uses;       /* consumers that read `data` directly (others packed it) */
} spnn_tensor;

typedef union spnn_attr {
  int32_t i;
  float f;
} spnn_attr;

typedef struct spnn_model spnn_model;
typedef struct spnn_op spnn_op;
typedef void (*spnn_run_fn)(spnn_model* model, spnn_op* op);

struct spnn_op {
  uint16_t code;
  uint8_t num_inputs;
  const char* name;
  int32_t* inputs;    /* tensor ids, -1 for an absent optional input */
  int32_t output;
  spnn_attr attr[SPNN_MAX_ATTRS];
  spnn_run_fn run;
  const char* kernel; /* the kernel picked at load, for profiles */
  void* state;        /* op-specific data made at load (packed weights, tables) */
  void (*free_state)(void* state);
  size_t state_bytes; /* counted in spnn_weight_bytes */
  double macs;        /* multiply-adds (or element operations) per run */
  double us;          /* last run's time when profiling */
};

struct spnn_model {
  char error[SPNN_ERROR_MESSAGE_SIZE];
  char* strings;      /* copy of the STRINGS section, NUL-terminated */
  uint32_t strings_size;
  uint32_t strings_end; /* offsets up to here name strings that end inside STRINGS */
  size_t file_size;
  char* metadata;     /* copy of the METADATA section, NUL-terminated */

  uint32_t num_tensors, num_ops, num_inputs, num_outputs;
  spnn_tensor* tensors;
  spnn_op* ops;
  int32_t* op_io;     /* storage for every op's input list */
  uint32_t* inputs;
  uint32_t* outputs;

  uint8_t* memory;      /* the graph inputs' own buffers (they outlive runs), then the arena */
  uint8_t* arena;
  size_t arena_bytes;
  size_t constant_bytes; /* decoded constants kept for ops that read them directly */

  int max_threads;
  int num_threads;
  spnn_threadpool* pool;     /* the process's shared pool (spnn_threadpool_share), or NULL */
  spnn_threadpool* run_pool; /* during a run: the pool if this run claimed it, else NULL */
  float* scratch;      /* shared by the ops that sum partial results between two jobs */

  int profiling;
  char* profile_json;
  double total_macs;
};

/* ---- helpers shared by the loader and the op families ----------------------------- */

/* Formats into model->error and returns `status`. */
spnn_status spnn_fail(spnn_model* model, spnn_status status, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

const char* spnn_op_type_name(int code);

static inline spnn_tensor* spnn_in(spnn_model* m, const spnn_op* op, int i) {
  return (i < op->num_inputs && op->inputs[i] >= 0) ? &m->tensors[op->inputs[i]] : NULL;
}
static inline spnn_tensor* spnn_out(spnn_model* m, const spnn_op* op) { return &m->tensors[op->output]; }

/* Fused activation bounds for an `act` code; 0 if the code is unknown. */
int spnn_act_bounds(int32_t act, float* lo, float* hi);

/* Runs fn over [0, n) on the model's active threads; chunk boundaries are multiples of
 * `align` (the last chunk takes the rest). Inline when one thread or when `work` (about
 * the op's multiply-adds) is too little to pay for handing it out. */
void spnn_parallel(spnn_model* model, double work, size_t n, size_t align, spnn_task_fn fn,
                   void* ctx);
/* The threads spnn_parallel would use for `work`. */
int spnn_parallel_threads(const spnn_model* model, double work);

/* ---- op families: prepare checks shapes and attributes, picks the run function --------- */

spnn_status spnn_prepare_conv(spnn_model* m, spnn_op* op);           /* CONV2D */
/* Folds a residual ADD into the 1x1 convolution (SpMM or GEMM) whose output it reads:
 * the convolution then writes clamp(its sum + residual) to `output` (the ADD's output) with
 * the ADD's clamp. 0 where the convolution cannot (another kernel, its own activation, or a
 * GEMM asked to work in place); the caller has checked shapes and memory. */
int spnn_conv_fold_add(spnn_op* op, const float* residual, float* output, float lo, float hi);
/* Runs the depthwise layer `dw`, which reads only `op`'s output, with the 1x1 layer `op`,
 * band by band, and with them the 1x1 layer `pw` (or NULL), which reads only `dw`'s output,
 * where it can: each band's pixels of `pw` follow its depthwise rows; `threads`: those the
 * model is loaded for. Returns how many of `dw` and `pw` then have nothing left to run (0, 1
 * or 2). The caller has checked that `dw`'s output shares no bytes with `op`'s input or
 * output. */
int spnn_conv_fuse_block(spnn_op* op, spnn_op* dw, spnn_op* pw, int threads);
/* Splits the input channels of the sparse 1x1 layer `op`, which reads the output of
 * `producer`, into parts summed by different threads, where `producer` is a depthwise layer
 * that splits its channels between threads; returns the floats of m->scratch the layer
 * then needs (0: not split). The weight's sparse form must still be there. */
size_t spnn_conv_split_inputs(spnn_model* m, spnn_op* op, const spnn_op* producer);
/* Splits the output channels of the 1x1 layer `op` between threads where `consumer`, the only
 * reader of its output, is a depthwise layer that splits its channels; 1 if done. */
int spnn_conv_split_outputs(spnn_model* m, spnn_op* op, const spnn_op* consumer);
/* Splits an expansion `op`, the channel-split depthwise layer `dw` after it and the projection
 * `pw` after that as above, with the same channels per thread, and runs the three parts of
 * each thread as one job from `op` (`dw` then does nothing, `pw` adds the parts); returns the
 * floats of m->scratch `pw` then needs (0: left as they were). The caller checks that only
 * `dw` reads op's output and only `pw` dw's, and that dw's output does not share bytes with
 * op's input (written while another thread still reads it). */
size_t spnn_conv_chain(spnn_model* m, spnn_op* op, spnn_op* dw, spnn_op* pw);
/* After spnn_conv_split_inputs(m, pw, dw) split `pw` over the channel-split depthwise layer
 * `dw`, the op just before it: each thread runs its channels of `dw` and its part of `pw`'s
 * sums as one job from `dw` (`pw` then adds the parts). The caller checks that nothing runs
 * between the two. */
void spnn_conv_chain_dw(spnn_op* dw, spnn_op* pw);

spnn_status spnn_prepare_conv_transpose(spnn_model* m, spnn_op* op); /* CONV_TRANSPOSE2D */
spnn_status spnn_prepare_fully_connected(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_matmul(spnn_model* m, spnn_op* op);         /* both operands at run time */
spnn_status spnn_prepare_binary(spnn_model* m, spnn_op* op);         /* ADD MUL SUB DIV MAX MIN POW */
spnn_status spnn_prepare_unary(spnn_model* m, spnn_op* op);          /* activations */
/* The ADD and CLIP ops' element loops, for ops that fold them in: out = clamp(a + b) and
 * out = clamp(in) to [lo, hi], n floats (out may be an input; NaN stays NaN in CLIP's). */
void spnn_f32_add_clamped(const float* a, const float* b, float* out, size_t n, float lo, float hi);
void spnn_f32_clamp(const float* in, float* out, size_t n, float lo, float hi);
spnn_status spnn_prepare_prelu(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_pool(spnn_model* m, spnn_op* op);           /* MAX/AVG_POOL2D */
spnn_status spnn_prepare_mean(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_softmax(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_lrn(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_sum(spnn_model* m, spnn_op* op);           /* n-ary add */
spnn_status spnn_prepare_concat(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_pad(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_resize(spnn_model* m, spnn_op* op);
/* A RELU or CLIP after a resize, folded into it: the resize clamps each plane to [lo, hi]
 * and writes `output` (the activation's). 0 if `op` is not a resize or has one already. */
int spnn_resize_fold_clamp(spnn_op* op, float* output, float lo, float hi);
/* ADD(resize(x), skip) folded into the resize: each plane plus skip's, clamped to [lo, hi],
 * written to `output` (the add's), after any folded clamp. 0 if `op` is not a resize or has
 * an add already. */
int spnn_resize_fold_add(spnn_op* op, const float* residual, float* output, float lo, float hi);
/* Whether `op` is a resize that writes `data`. */
int spnn_resize_writes(const spnn_op* op, const float* data);
spnn_status spnn_prepare_depth_to_space(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_reshape(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_transpose(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_slice(spnn_model* m, spnn_op* op);
spnn_status spnn_prepare_pad_reflect(spnn_model* m, spnn_op* op);

/* Whether an op may write its output over an input of the same size and offset. */
int spnn_op_in_place_ok(int code);

/* Weight decoding (weights.c). A sparse tensor's dense f32 copy, made on first need. */
spnn_status spnn_densify(spnn_model* m, spnn_tensor* t);
/* Marks that an op reads the constant's f32 data directly at run time (densifying if
 * needed); does nothing for activations. */
spnn_status spnn_use_raw(spnn_model* m, spnn_tensor* t);

/* Shape checks shared by the op families; each fails with a message naming the tensor. */
spnn_status spnn_expect_ndim(spnn_model* m, const spnn_tensor* t, int ndim, const char* what);
spnn_status spnn_expect_dims(spnn_model* m, const spnn_tensor* t, int ndim, const int32_t* dims,
                             const char* what);
spnn_status spnn_expect_constant(spnn_model* m, const spnn_tensor* t, const char* what);

uint32_t spnn_crc32(const uint8_t* data, size_t size);
uint32_t spnn_crc32_update(uint32_t crc, const uint8_t* data, size_t size);

#endif /* PYSPARSE_ENGINE_H */
