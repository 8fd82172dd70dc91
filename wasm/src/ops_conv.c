/* CONV2D, CONV_TRANSPOSE2D, FULLY_CONNECTED and MATMUL: shape checks, the kernel choice and
 * weight packing at load; at run time the kernels over thread-split ranges.
 *
 * Kernel choice for CONV2D (docs/format.md semantics, CHW activations):
 *   1x1, stride 1, no padding, groups 1, sparse weights  -> SpMM with the file's block
 *   1x1, stride 1, no padding, groups 1, dense weights   -> GEMM
 *   depthwise (groups == Cin == Cout)                     -> depthwise kernel
 *   anything else                                         -> KxK convolution (im2col + GEMM)
 * A batch of N images is one job over N x (one image's units), on the same packed weights.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "kernels.h"
#include "simd.h"

#define MAX_GEOMETRY (1 << 16) /* strides, dilations, kernel sizes and pads above this are refused */

/* 1x1 layers on planes this small split their output channels, not their pixels, between
 * threads: a pixel split of a 7x7 plane gives one thread 32 pixels and the other 17. The
 * channels are cut at load into PARTS sub-matrices, each packed on its own, of about equal
 * work; each output channel sums its terms as the whole layer would, so results do not
 * depend on the cut. A model loaded for one thread keeps these layers whole: every part
 * reads the whole input again. */
#define SPLIT_CHANNELS_BELOW 128 /* pixels */
#ifndef PARTS /* can be set at build time (for A/B builds) */
#define PARTS 4
#endif
#define PART_MIN_ROWS 16
/* Whether a 1x1 layer over `pixels` is cut into parts when loaded by `m`. */
static int cut_in_parts(const spnn_model* m, size_t pixels) {
  return pixels < SPLIT_CHANNELS_BELOW && m->max_threads > 1;
}
/* Depthwise layers split their rows between threads (not their channels) where each thread's
 * band has at least this many pixels: on smaller planes the per-band set-up costs more than
 * the data the split keeps in a core's cache. */
#ifndef DW_BAND_MIN_PIXELS
#define DW_BAND_MIN_PIXELS 1024
#endif

/* Input-channel parts of a 1x1 layer after a channel-split depthwise one: at most this many. */
#ifndef MAX_KPARTS
#define MAX_KPARTS 8
#endif

enum { CONV_SPMM, CONV_GEMM, CONV_DW, CONV_KXK };

typedef struct conv_state {
  int kind;
  void* packed;
  spnn_spmm_weights spmm;
  spnn_conv_shape cs;
  spnn_dwconv_shape ds;
  spnn_dwconv_ukernel dw;
  uint32_t rows, cols;
  const float* batch_in; /* image 0; a batch is N CHW images one after another */
  float* batch_out;
  const float* batch_residual; /* a residual ADD folded in (spnn_conv_fold_add), or NULL */
  size_t batch;
  size_t in_image, out_image; /* floats per image */
  size_t units, align; /* the thread-split units of one image, and their alignment */
  size_t bands;        /* depthwise: bands of rows per image, one per thread (set per run) */
  float* scratch;
  float lo, hi;
  /* channel parts (0: split pixels): rows [part_row[k], part_row[k + 1]) */
  uint32_t parts;
  uint32_t part_row[PARTS + 1];
  void* part_packed[PARTS];
  spnn_spmm_weights part_spmm[PARTS];
  /* input-channel parts (0: none): part k sums channels [cols k / kparts, cols (k + 1) / kparts) */
  uint32_t kparts;
  void* kpart_packed[MAX_KPARTS];
  spnn_spmm_weights kpart_spmm[MAX_KPARTS];
  float* ksums; /* kparts x rows x pixels: the model's scratch, set per run */
  /* the channel chain (spnn_conv_chain): on the expansion, the depthwise layer and projection
   * whose part k each thread runs after its expansion part k; on the projection, 1 (its op
   * then only adds the parts) */
  spnn_op* chain_dw;
  spnn_op* chain_pw;
  int chained;
  /* on a channel-split depthwise layer: the projection after it whose part k each thread sums
   * right after filtering channels part k (spnn_conv_chain_dw) */
  spnn_op* parts_pw;
  /* a depthwise layer run with this 1x1 layer band by band, and maybe the sparse 1x1 layer
   * after it (spnn_conv_fuse_block) */
  spnn_op* then_dw;
  spnn_op* then_pw;
  int split_rows; /* ... writing its band's rows split by column parity, for a stride-2 then_dw */
  char fused_name[48];
} conv_state;

static void free_conv(void* p) {
  conv_state* s = (conv_state*)p;
  for (uint32_t k = 0; k < s->kparts; k++) spnn_dealloc(s->kpart_packed[k]);
  for (uint32_t k = 0; k < s->parts; k++) spnn_dealloc(s->part_packed[k]);
  spnn_dealloc(s->packed);
  spnn_dealloc(s->scratch);
  free(s);
}

/* Row bands of a depthwise layer run on `threads`: one per thread where each has at least
 * DW_BAND_MIN_PIXELS pixels, else 1 (its channels are split instead). */
static size_t dw_bands(const conv_state* d, int threads) {
  const size_t plane = (size_t)d->ds.out_h * d->ds.out_w;
  return threads > 1 && plane >= DW_BAND_MIN_PIXELS * (size_t)threads ? (size_t)threads : 1;
}

/* Depthwise units: band k of s->bands (out_h * k / bands up to the next band's first row)
 * times channels, band-major, so a thread's share is a band of rows, as in the 1x1 layers
 * around it (their pixel split), whose data its core already holds. One band: whole planes. */
static void dw_units(conv_state* s, size_t b, size_t e, const float* in, float* out) {
  const size_t C = s->ds.channels, H = s->ds.out_h;
  if (s->bands <= 1) {
    s->dw(&s->ds, b, e, in, s->packed, out, s->lo, s->hi);
    return;
  }
  for (size_t k = b / C; k < s->bands && k * C < e; k++) {
    const size_t c0 = b > k * C ? b - k * C : 0, c1 = (e < (k + 1) * C ? e : (k + 1) * C) - k * C;
    spnn_f32_dwconv_rows(&s->ds, c0, c1, H * k / s->bands, H * (k + 1) / s->bands, in, s->packed,
                         out, s->lo, s->hi);
  }
}

/* The kernel over units [b, e) of image n: pixels (SpMM, GEMM, KxK), bands x channels (depthwise)
 * or channel parts (1x1 layers on small planes). */
static void conv_units(conv_state* s, size_t n, size_t b, size_t e) {
  const float* in = s->batch_in + n * s->in_image;
  float* out = s->batch_out + n * s->out_image;
  const float* res = s->batch_residual ? s->batch_residual + n * s->out_image : NULL;
  const size_t p = s->cs.out_h * (size_t)s->cs.out_w;
  if (s->parts) {
    for (size_t k = b; k < e; k++) {
      const size_t first = s->part_row[k] * p;
      if (s->kind == CONV_SPMM)
        spnn_spmm_run_residual(&s->part_spmm[k], 0, p, in, out + first, res ? res + first : NULL,
                               s->lo, s->hi);
      else
        spnn_gemm_run_residual(s->part_row[k + 1] - s->part_row[k], s->cols, s->part_packed[k], 0,
                               p, in, p, out + first, res ? res + first : NULL, p, s->lo, s->hi);
    }
    return;
  }
  switch (s->kind) {
    case CONV_SPMM: spnn_spmm_run_residual(&s->spmm, b, e, in, out, res, s->lo, s->hi); break;
    case CONV_GEMM:
      spnn_gemm_run_residual(s->rows, s->cols, s->packed, b, e, in, p, out, res, p, s->lo, s->hi);
      break;
    case CONV_DW: dw_units(s, b, e, in, out); break;
    default: spnn_conv_run(&s->cs, s->packed, b, e, in, s->scratch, out, s->lo, s->hi); break;
  }
}

/* A task's range is of the batch seen as one run of batch x units, so it may end in
 * another image than it starts in. */
static void conv_task(void* ctx, size_t b, size_t e) {
  conv_state* s = (conv_state*)ctx;
  for (size_t n = b / s->units; n < s->batch && n * s->units < e; n++) {
    const size_t first = n * s->units;
    conv_units(s, n, b > first ? b - first : 0, (e < first + s->units ? e : first + s->units) - first);
  }
}

/* The task of one image of a KxK convolution, whose im2col scratch holds one image. */
typedef struct kxk_image {
  conv_state* s;
  size_t n;
} kxk_image;
static void kxk_task(void* ctx, size_t b, size_t e) {
  const kxk_image* k = (const kxk_image*)ctx;
  conv_units(k->s, k->n, b, e);
}

/* ---- A 1x1 layer and the depthwise layer after it, band by band ----------------------
 * The 1x1 layer's output (an expansion: many channels on a large plane) is written and read
 * back a band of rows at a time, into a few rows of its own buffer that stay in the core's
 * L2, instead of the whole plane going out to memory and back. Thread t of T takes the
 * depthwise output rows [H t / T, H (t + 1) / T) and walks them FUSE_BAND_BYTES of 1x1 output
 * at a time, in slot t: rows [t R, (t + 1) R) of every channel of the 1x1 layer's buffer (R
 * the input rows of one band). The depthwise taps of two bands overlap by K - S rows, which
 * each band computes again. A sparse 1x1 layer after the depthwise one (a projection) may
 * join: it runs on each band's depthwise output pixels while they are in L2. Every pixel is
 * summed as the layers would sum it alone (a range of pixels of a 1x1 layer, a band of rows
 * of a depthwise one), so the bits are theirs. A stride-2 3x3 depthwise layer takes a sparse
 * 1x1 layer's rows split by column parity (spnn_spmm_run_split), which it reads in place
 * instead of copying each channel's rows into phases. */
#ifndef FUSE_BAND_BYTES
#define FUSE_BAND_BYTES (512 * 1024)
#endif
/* Only planes larger than this go band by band: a smaller one stays in L2 between the two
 * layers anyway, and the overlapping rows would be computed twice for nothing. With the 1x1
 * layer after the depthwise one in the bands too, the depthwise output also stays in L2
 * for it, which pays on smaller planes, where the model runs on two or more threads: on one
 * thread the overlapping rows cost as much as that saves (docs/benchmarks.md), so there the
 * whole block takes the pair's floor. */
#ifndef FUSE_MIN_BYTES
#define FUSE_MIN_BYTES (2048 * 1024)
#endif
#ifndef FUSE_BLOCK_MIN_BYTES
#define FUSE_BLOCK_MIN_BYTES (1024 * 1024)
#endif

typedef struct fused_job {
  conv_state* s; /* the 1x1 layer */
  conv_state* d; /* the depthwise layer */
  conv_state* p; /* the 1x1 layer after it, or NULL */
  size_t threads, band, slot_rows;
} fused_job;

/* The input rows of `band` output rows of a depthwise layer. */
static size_t band_input_rows(const spnn_dwconv_shape* ds, size_t band) {
  return (band - 1) * ds->stride_h + (size_t)(ds->kernel_h - 1) * ds->dilation_h + 1;
}

/* Depthwise output rows per band, for `threads` slots: 0 if the slots do not fit. */
static size_t fused_band_rows(const conv_state* d, size_t threads) {
  const spnn_dwconv_shape* ds = &d->ds;
  const size_t row_bytes = (size_t)ds->channels * ds->in_w * sizeof(float);
  size_t rows = FUSE_BAND_BYTES / row_bytes;
  if (rows > ds->in_h / threads) rows = ds->in_h / threads;
  if (rows < band_input_rows(ds, 2)) return 0; /* under two output rows a band */
  return (rows - band_input_rows(ds, 1)) / ds->stride_h + 1;
}

static void fused_task(void* ctx, size_t b, size_t e) {
  const fused_job* j = (const fused_job*)ctx;
  const conv_state *s = j->s, *d = j->d;
  const spnn_dwconv_shape* ds = &d->ds;
  const size_t W = ds->in_w, P = (size_t)ds->in_h * W, H = ds->out_h;
  for (size_t t = b; t < e; t++) {
    float* slot = s->batch_out + t * j->slot_rows * W;
    for (size_t r = H * t / j->threads, end = H * (t + 1) / j->threads; r < end; r += j->band) {
      const size_t r_end = r + j->band < end ? r + j->band : end;
      size_t top, bottom;
      spnn_dwconv_input_rows(ds, r, r_end, &top, &bottom);
      /* pixel p of the 1x1 layer's rows [top, bottom) lands at slot[p - top W] */
      float* out = (float*)((uintptr_t)slot - top * W * sizeof(float));
      if (s->split_rows)
        spnn_spmm_run_split(&s->spmm, top * W, bottom * W, s->batch_in, out, W, s->lo, s->hi);
      else if (s->kind == CONV_SPMM)
        spnn_spmm_run(&s->spmm, top * W, bottom * W, s->batch_in, out, s->lo, s->hi);
      else
        spnn_gemm_run(s->rows, s->cols, s->packed, top * W, bottom * W, s->batch_in, P, out, P,
                      s->lo, s->hi);
      if (s->split_rows)
        spnn_f32_dwconv_split_rows_at(ds, 0, ds->channels, r, r_end, slot, P, d->packed,
                                      d->batch_out, d->lo, d->hi);
      else
        spnn_f32_dwconv_rows_at(ds, 0, ds->channels, r, r_end, slot, P, d->packed, d->batch_out,
                                d->lo, d->hi);
      if (j->p) /* the band's pixels of the layer after, while they are in this core's cache */
        spnn_spmm_run_residual(&j->p->spmm, r * ds->out_w, r_end * ds->out_w, j->p->batch_in,
                               j->p->batch_out, j->p->batch_residual, j->p->lo, j->p->hi);
    }
  }
}

/* 0 where the slots do not fit this thread count (the layers then run one by one). */
static int run_fused(spnn_model* m, spnn_op* op, conv_state* s) {
  conv_state* d = (conv_state*)s->then_dw->state;
  conv_state* p = s->then_pw ? (conv_state*)s->then_pw->state : NULL;
  const double macs = op->macs + s->then_dw->macs + (p ? s->then_pw->macs : 0);
  fused_job j = {s, d, p, (size_t)spnn_parallel_threads(m, macs), 0, 0};
  if (!(j.band = fused_band_rows(d, j.threads))) return 0;
  j.slot_rows = band_input_rows(&d->ds, j.band);
  spnn_parallel(m, macs, j.threads, 1, fused_task, &j);
  return 1;
}

/* Whether floats [a, a + na) and [b, b + nb) share bytes. */
static int floats_overlap(const float* a, size_t na, const float* b, size_t nb) {
  return (uintptr_t)a < (uintptr_t)(b + nb) && (uintptr_t)b < (uintptr_t)(a + na);
}

/* Whether the 1x1 layer p, which reads only the output of s's depthwise layer d, can join
 * their bands: a sparse layer over a pixel range writes those pixels only (a GEMM's last
 * tile may recompute pixels before the range, whose inputs another band may not have
 * written yet); its output (maybe an ADD's, folded into it) is written while s still reads
 * its input and writes its output, so it shares bytes with neither, nor with d's output;
 * nor does its residual share bytes with what the walk writes. */
static int can_join_bands(const conv_state* s, const conv_state* d, const conv_state* p) {
  if (p->kind != CONV_SPMM || p->parts || p->kparts || p->then_dw || p->batch != 1 ||
      p->batch_in != d->batch_out)
    return 0;
  const float* out = p->batch_out;
  const size_t n = p->out_image;
  if (floats_overlap(out, n, s->batch_in, s->in_image) ||
      floats_overlap(out, n, s->batch_out, s->out_image) ||
      floats_overlap(out, n, d->batch_out, d->out_image))
    return 0;
  return !p->batch_residual || (!floats_overlap(p->batch_residual, n, s->batch_out, s->out_image) &&
                                !floats_overlap(p->batch_residual, n, d->batch_out, d->out_image));
}

int spnn_conv_fuse_block(spnn_op* op, spnn_op* dw, spnn_op* pw, int threads) {
  if (op->code != SPNN_OP_CONV2D || dw->code != SPNN_OP_CONV2D || !op->state || !dw->state) return 0;
  conv_state *s = (conv_state*)op->state, *d = (conv_state*)dw->state;
  if ((s->kind != CONV_SPMM && s->kind != CONV_GEMM) || s->parts || s->batch != 1 ||
      s->batch_residual || s->then_dw)
    return 0;
  if (d->kind != CONV_DW || d->batch != 1 || d->batch_in != s->batch_out || !fused_band_rows(d, 1))
    return 0;
  const int join = pw && pw->code == SPNN_OP_CONV2D && pw->state &&
                   can_join_bands(s, d, (const conv_state*)pw->state);
  if (s->out_image * sizeof(float) <= (join && threads > 1 ? FUSE_BLOCK_MIN_BYTES : FUSE_MIN_BYTES))
    return 0;
  s->then_dw = dw;
  s->then_pw = join ? pw : NULL;
  /* the band's rows are only ever read by the depthwise layer: they may be split */
  s->split_rows = s->kind == CONV_SPMM && spnn_dwconv_reads_split(&d->ds) &&
                  spnn_spmm_splits(&s->spmm, d->ds.in_w) &&
                  spnn_spmm_split_pays(&s->spmm, d->ds.in_w);
  const char* split = s->split_rows ? "_split" : ""; /* the depthwise kernel on split rows */
  if (join)
    snprintf(s->fused_name, sizeof s->fused_name, "%s+%s%s+%s", op->kernel, dw->kernel, split,
             pw->kernel);
  else
    snprintf(s->fused_name, sizeof s->fused_name, "%s+%s%s", op->kernel, dw->kernel, split);
  op->kernel = s->fused_name;
  return join ? 2 : 1;
}

/* ---- The 1x1 layers around a depthwise layer that splits its channels --------------------
 * A depthwise layer on a plane too small for row bands splits its channels between the
 * threads. Data one core wrote and the other reads crosses between their caches, which on
 * small layers costs more than the arithmetic; so the 1x1 layers on either side follow the
 * depthwise layer's split instead of splitting pixels:
 * - the one before it (an expansion) splits its output channels (the channel parts of
 *   SPLIT_CHANNELS_BELOW): each thread writes the channels it will filter;
 * - the one after it (a projection) splits its input channels: part k sums the channels
 *   thread k filtered, over all pixels into a buffer of its own, then a second job adds the parts in order (and the residual) and clamps,
 *   split by pixels. Only the partial sums, a few output channels, cross between cores.
 * The parts are fixed at load (one per thread the model is loaded for), so the bits do not
 * depend on how many threads run it. */

/* Part k of the sums over pixels [b, e), into its buffer. */
static void sum_kpart(const conv_state* s, size_t k, size_t b, size_t e) {
  const size_t p = s->cs.out_h * (size_t)s->cs.out_w;
  spnn_spmm_run(&s->kpart_spmm[k], b, e, s->batch_in, s->ksums + k * s->rows * p, -INFINITY,
                INFINITY);
}

static void kpart_task(void* ctx, size_t b, size_t e) {
  const conv_state* s = (const conv_state*)ctx;
  for (size_t k = b; k < e; k++) sum_kpart(s, k, 0, s->cs.out_h * (size_t)s->cs.out_w);
}

static void kpart_sum_task(void* ctx, size_t b, size_t e) {
  conv_state* s = (conv_state*)ctx;
  spnn_f32_add_parts(s->kparts, s->ksums, s->rows, s->cs.out_h * (size_t)s->cs.out_w, b, e,
                     s->batch_residual, s->batch_out, s->lo, s->hi);
}

/* Pixels per pass when one thread sums all the parts: the partial sums stay in its cache. */
#define KPART_CHUNK 256

static void run_kparts(spnn_model* m, spnn_op* op, conv_state* s) {
  s->ksums = m->scratch;
  if (spnn_parallel_threads(m, op->macs) < 2) { /* the same sums, a pixel chunk at a time */
    const size_t p = s->cs.out_h * (size_t)s->cs.out_w;
    for (size_t b = 0; b < p; b += KPART_CHUNK) {
      const size_t e = p - b > KPART_CHUNK ? b + KPART_CHUNK : p;
      for (size_t k = 0; k < s->kparts; k++) sum_kpart(s, k, b, e);
      kpart_sum_task(s, b, e);
    }
    return;
  }
  spnn_parallel(m, op->macs, s->kparts, 1, kpart_task, s);
  /* boundaries on whole cache lines of every row where the rows allow it */
  spnn_parallel(m, op->macs, s->cs.out_h * (size_t)s->cs.out_w, 16, kpart_sum_task, s);
}

static spnn_status pack_spmm_parts(spnn_model* m, conv_state* s, const spnn_sparse* sp,
                                   const float* bias, uint32_t pixels, size_t* bytes);
static spnn_status pack_gemm_parts(spnn_model* m, conv_state* s, const float* w,
                                   const float* bias, size_t* bytes);
static uint32_t cut_parts(uint32_t rows, uint32_t align, const uint32_t* cost, uint32_t* part_row);

/* Whether the depthwise layer `op` splits its channels (not rows) between `threads`. */
static int dw_splits_channels(const spnn_op* op, int threads) {
  const conv_state* d = (const conv_state*)op->state;
  return op->code == SPNN_OP_CONV2D && d && d->kind == CONV_DW && d->batch == 1 && threads >= 2 &&
         dw_bands(d, threads) == 1 && d->ds.channels >= 4 * (uint32_t)threads;
}

/* Rows cut into up to PARTS parts of about equal work (cut_parts): by stored blocks for a
 * sparse weight `sp`, by 8-row groups for a dense one. */
static uint32_t cut_layer_parts(const conv_state* s, const spnn_sparse* sp, uint32_t* part_row) {
  return sp ? cut_parts(sp->rows, sp->block, sp->counts, part_row)
            : cut_parts(s->rows, 8, NULL, part_row);
}

/* Packs the expansion `op` in output-channel parts into *t, a copy of its state, of *bytes:
 * `even` parts of rows * k / even (each a whole number of its sparse blocks), or, for even =
 * 0, up to PARTS of about equal work. 1 if done; 0 if not (nothing is kept). */
static int pack_output_parts(spnn_model* m, spnn_op* op, uint32_t even, conv_state* t,
                             size_t* bytes) {
  const conv_state* s = (const conv_state*)op->state;
  const spnn_tensor* w = spnn_in(m, op, 1);
  const spnn_tensor* b = spnn_in(m, op, 2);
  const float* bias = b ? b->data : NULL;
  const spnn_sparse* sp = s->kind == CONV_SPMM ? w->sparse : NULL;
  if (s->kind == CONV_SPMM ? !sp : !w->data) return 0;
  *t = *s;
  memset(t->part_packed, 0, sizeof t->part_packed);
  if (even) {
    if (even > PARTS) return 0;
    for (uint32_t k = 0; k <= even; k++) {
      t->part_row[k] = (uint32_t)((size_t)s->rows * k / even);
      if (sp && k < even && t->part_row[k] % sp->block) return 0;
    }
    t->parts = even;
  } else {
    t->parts = cut_layer_parts(s, sp, t->part_row);
  }
  if (!t->parts) return 0;
  if ((sp ? pack_spmm_parts(m, t, sp, bias, s->cs.out_h * s->cs.out_w, bytes)
          : pack_gemm_parts(m, t, w->data, bias, bytes)) != SPNN_OK) {
    for (uint32_t k = 0; k < t->parts; k++) spnn_dealloc(t->part_packed[k]);
    m->error[0] = 0;
    return 0;
  }
  t->packed = NULL;
  t->units = t->parts;
  t->align = 1;
  return 1;
}

/* Makes *t, from pack_output_parts, the state of `op`; the packing it had goes. */
static void use_output_parts(spnn_op* op, conv_state* t, size_t bytes) {
  conv_state* s = (conv_state*)op->state;
  for (uint32_t k = 0; k < s->parts; k++) spnn_dealloc(s->part_packed[k]);
  spnn_dealloc(s->packed);
  *s = *t;
  op->state_bytes = bytes;
}

/* Whether `op` is an expansion that may split its output channels for the depthwise layer d
 * after it (packed again where a small plane had it in parts already): its input, which every
 * thread then reads whole, is the smaller tensor. */
static int splits_outputs_for(const spnn_op* op, const conv_state* d) {
  const conv_state* s = (const conv_state*)op->state;
  return op->code == SPNN_OP_CONV2D && s && (s->kind == CONV_SPMM || s->kind == CONV_GEMM) &&
         !s->kparts && !s->then_dw && !s->chain_dw && s->batch == 1 &&
         d->batch_in == s->batch_out && s->cols < s->rows;
}

int spnn_conv_split_outputs(spnn_model* m, spnn_op* op, const spnn_op* consumer) {
  if (!dw_splits_channels(consumer, m->max_threads) ||
      !splits_outputs_for(op, (const conv_state*)consumer->state) ||
      ((const conv_state*)op->state)->parts)
    return 0;
  conv_state t;
  size_t bytes;
  if (!pack_output_parts(m, op, 0, &t, &bytes)) return 0;
  use_output_parts(op, &t, bytes);
  return 1;
}

/* Whether `op` is a projection that may sum its input channels in parts, one per thread of
 * the channel-split depthwise layer `producer` before it: the partial sums (its output
 * channels, per part) that cross between cores are fewer than the input channels a pixel
 * split would move. */
static int splits_inputs_for(spnn_model* m, const spnn_op* op, const spnn_op* producer) {
  if (op->code != SPNN_OP_CONV2D || producer->code != SPNN_OP_CONV2D || !op->state ||
      !producer->state)
    return 0;
  const conv_state *s = (const conv_state*)op->state, *d = (const conv_state*)producer->state;
  const spnn_tensor* w = spnn_in(m, op, 1);
  return m->max_threads <= MAX_KPARTS && s->kind == CONV_SPMM && s->batch == 1 && !s->then_dw &&
         !s->kparts && dw_splits_channels(producer, m->max_threads) &&
         d->batch_out == s->batch_in && 2 * s->rows <= s->cols && w && w->sparse;
}

/* Packs the projection `op` in m->max_threads input-channel parts into *t, a copy of its
 * state, of *bytes; the floats of m->scratch it then needs, or 0 (nothing is kept). */
static size_t pack_input_parts(spnn_model* m, spnn_op* op, conv_state* t, size_t* bytes) {
  const conv_state* s = (const conv_state*)op->state;
  const spnn_tensor* b = spnn_in(m, op, 2);
  const spnn_sparse* sp = spnn_in(m, op, 1)->sparse;
  const uint32_t pixels = s->cs.out_h * s->cs.out_w;
  *t = *s;
  t->kparts = (uint32_t)m->max_threads;
  *bytes = 0;
  for (uint32_t k = 0; k < t->kparts; k++) {
    /* the depthwise layer's channels of thread k (threadpool.h) */
    const uint32_t c0 = (uint32_t)((size_t)s->cols * k / t->kparts);
    const uint32_t c1 = (uint32_t)((size_t)s->cols * (k + 1) / t->kparts);
    uint32_t stored = 0;
    for (uint32_t i = 0; i < sp->num_steps; i++) stored += sp->columns[i] >= c0 && sp->columns[i] < c1;
    const size_t size = spnn_spmm_packed_bytes(sp->rows, c1 - c0, sp->block, stored);
    if (!(t->kpart_packed[k] = spnn_alloc(size)) ||
        spnn_spmm_pack_columns(sp->rows, sp->cols, sp->block, sp->counts, sp->columns, sp->values,
                               k == 0 && b ? b->data : NULL, pixels, c0, c1, t->kpart_packed[k],
                               &t->kpart_spmm[k]) != 0) {
      for (uint32_t j = 0; j <= k; j++) spnn_dealloc(t->kpart_packed[j]);
      return 0;
    }
    *bytes += size;
  }
  t->packed = NULL;
  t->parts = 0;
  return (size_t)t->kparts * s->rows * pixels;
}

/* Makes *t, from pack_input_parts, the state of `op`; the whole-layer packing goes. */
static void use_input_parts(spnn_op* op, conv_state* t, size_t bytes) {
  conv_state* s = (conv_state*)op->state;
  for (uint32_t k = 0; k < s->parts; k++) spnn_dealloc(s->part_packed[k]);
  spnn_dealloc(s->packed);
  *s = *t;
  op->state_bytes = bytes;
  snprintf(s->fused_name, sizeof s->fused_name, "%s/%u", op->kernel, (unsigned)s->kparts);
  op->kernel = s->fused_name;
}

size_t spnn_conv_split_inputs(spnn_model* m, spnn_op* op, const spnn_op* producer) {
  if (!splits_inputs_for(m, op, producer)) return 0;
  conv_state t;
  size_t bytes;
  const size_t floats = pack_input_parts(m, op, &t, &bytes);
  if (floats) use_input_parts(op, &t, bytes);
  return floats;
}

/* ---- The channel chain: an expansion, a channel-split depthwise layer and a projection ----
 * With the three layers split as above, thread k's part of each reads only what its own
 * part of the one before wrote: the expansion's output channels [C k / T, C (k + 1) / T)
 * (T the threads the model is loaded for), the depthwise layer on those channels, the
 * projection's partial sums over them. So each thread runs its three parts one after another
 * in one job, with no wait between the layers, and the projection's op only adds the parts.
 * Each part sums as it would alone, so the bits are those of the layers run one by one. */
static void chain_task(void* ctx, size_t b, size_t e) {
  conv_state* s = (conv_state*)ctx;
  const conv_state* d = (const conv_state*)s->chain_dw->state;
  const conv_state* p = (const conv_state*)s->chain_pw->state;
  for (size_t k = b; k < e; k++) {
    conv_units(s, 0, k, k + 1);
    d->dw(&d->ds, s->part_row[k], s->part_row[k + 1], d->batch_in, d->packed, d->batch_out, d->lo,
          d->hi);
    sum_kpart(p, k, 0, p->cs.out_h * (size_t)p->cs.out_w);
  }
}

static void run_chain(spnn_model* m, spnn_op* op, conv_state* s) {
  ((conv_state*)s->chain_pw->state)->ksums = m->scratch;
  spnn_parallel(m, op->macs + s->chain_dw->macs + s->chain_pw->macs, s->parts, 1, chain_task, s);
}

size_t spnn_conv_chain(spnn_model* m, spnn_op* op, spnn_op* dw, spnn_op* pw) {
  const uint32_t threads = (uint32_t)m->max_threads;
  if (threads > PARTS || !dw_splits_channels(dw, m->max_threads) || !op->state ||
      !splits_outputs_for(op, (const conv_state*)dw->state) || !splits_inputs_for(m, pw, dw))
    return 0;
  conv_state out, in; /* both packed before either is used: on failure all stays as it was */
  size_t out_bytes, in_bytes;
  if (!pack_output_parts(m, op, threads, &out, &out_bytes)) return 0;
  const size_t floats = pack_input_parts(m, pw, &in, &in_bytes);
  if (!floats) {
    for (uint32_t k = 0; k < out.parts; k++) spnn_dealloc(out.part_packed[k]);
    return 0;
  }
  use_output_parts(op, &out, out_bytes);
  use_input_parts(pw, &in, in_bytes);
  conv_state *s = (conv_state*)op->state, *p = (conv_state*)pw->state;
  p->chained = 1;
  s->chain_dw = dw;
  s->chain_pw = pw;
  snprintf(s->fused_name, sizeof s->fused_name, "%s/%u+%s+%s", op->kernel, (unsigned)threads,
           dw->kernel, pw->kernel);
  op->kernel = s->fused_name;
  pw->kernel = "add_parts";
  return floats;
}

/* ---- A channel-split depthwise layer and the projection after it -------------------------
 * Where the depthwise layer has no expansion before it (BlazeFace-style blocks: depthwise,
 * then 1x1), its channels and the projection's input-channel parts are still cut alike:
 * thread k filters channels [C k / T, C (k + 1) / T) and sums the projection's part k over
 * them in one job, with no wait between the two; the projection's op then only adds the
 * parts. Each channel and each part computes as it would alone: the same bits. */
static void dw_parts_task(void* ctx, size_t b, size_t e) {
  const conv_state* d = (const conv_state*)ctx;
  const conv_state* p = (const conv_state*)d->parts_pw->state;
  const size_t C = d->ds.channels;
  for (size_t k = b; k < e; k++) {
    d->dw(&d->ds, C * k / p->kparts, C * (k + 1) / p->kparts, d->batch_in, d->packed,
          d->batch_out, d->lo, d->hi);
    sum_kpart(p, k, 0, p->cs.out_h * (size_t)p->cs.out_w);
  }
}

static void run_dw_parts(spnn_model* m, spnn_op* op, conv_state* d) {
  conv_state* p = (conv_state*)d->parts_pw->state;
  p->ksums = m->scratch;
  spnn_parallel(m, op->macs + d->parts_pw->macs, p->kparts, 1, dw_parts_task, d);
}

void spnn_conv_chain_dw(spnn_op* dw, spnn_op* pw) {
  conv_state *d = (conv_state*)dw->state, *p = (conv_state*)pw->state;
  d->parts_pw = pw;
  p->chained = 1;
  snprintf(d->fused_name, sizeof d->fused_name, "%s+%s", dw->kernel, pw->kernel);
  dw->kernel = d->fused_name;
  pw->kernel = "add_parts";
}

static void run_conv_layer(spnn_model* m, spnn_op* op);

static void run_conv(spnn_model* m, spnn_op* op) {
  conv_state* s = (conv_state*)op->state;
  if (s->chain_dw) {
    run_chain(m, op, s);
    return;
  }
  if (s->parts_pw) {
    run_dw_parts(m, op, s);
    return;
  }
  if (s->chained) {
    /* the chain summed the parts; the calling thread adds them (a job on every thread for
     * so little work costs more in its hand-over than it saves) */
    kpart_sum_task(s, 0, s->cs.out_h * (size_t)s->cs.out_w);
    return;
  }
  if (s->kparts) {
    run_kparts(m, op, s);
    return;
  }
  if (s->then_dw && run_fused(m, op, s)) return;
  run_conv_layer(m, op);
  if (s->then_dw) run_conv_layer(m, s->then_dw);
  if (s->then_pw) run_conv_layer(m, s->then_pw);
}

/* One parallel job over the whole batch: the packed weights serve every image, and when the
 * images divide evenly between the threads each thread takes whole images (no thread
 * shares a plane, one sync point per layer however large the batch). KxK convolutions run
 * image by image: their scratch holds one image's columns. */
static void run_conv_layer(spnn_model* m, spnn_op* op) {
  conv_state* s = (conv_state*)op->state;
  if (s->kind == CONV_KXK) {
    for (size_t n = 0; n < s->batch; n++) {
      kxk_image k = {s, n};
      spnn_parallel(m, op->macs / s->batch, s->units, s->align, kxk_task, &k);
    }
    return;
  }
  const int by_image = s->batch > 1 && m->num_threads > 1 && s->batch % (size_t)m->num_threads == 0;
  if (s->kind == CONV_DW) {
    /* whole images per thread need no bands */
    s->bands = dw_bands(s, by_image ? 1 : spnn_parallel_threads(m, op->macs));
    s->units = s->bands * s->ds.channels;
  }
  spnn_parallel(m, op->macs, s->batch * s->units, by_image ? s->units : s->align, conv_task, s);
}

int spnn_conv_fold_add(spnn_op* op, const float* residual, float* output, float lo, float hi) {
  if (op->code != SPNN_OP_CONV2D || !op->state) return 0;
  conv_state* s = (conv_state*)op->state;
  if ((s->kind != CONV_SPMM && s->kind != CONV_GEMM) || s->batch_residual) return 0;
  if (s->lo != -INFINITY || s->hi != INFINITY) return 0; /* the add must see the plain sum */
  if (s->kind == CONV_GEMM && residual == output) return 0;  /* its last tile may recompute */
  /* column slices keep partial sums in the output: the residual must be elsewhere */
  const uint32_t slices = s->parts ? s->part_spmm[0].slices : s->spmm.slices;
  if (s->kind == CONV_SPMM && residual == output && slices > 1) return 0;
  s->batch_residual = residual;
  s->batch_out = output;
  s->lo = lo;
  s->hi = hi;
  return 1;
}

static spnn_status check_range(spnn_model* m, const char* what, int32_t v, int32_t lo) {
  if (v < lo || v > MAX_GEOMETRY)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "attribute %s = %d is out of range", what, (int)v);
  return SPNN_OK;
}

static spnn_status check_act(spnn_model* m, int32_t act, float* lo, float* hi) {
  if (!spnn_act_bounds(act, lo, hi))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "unknown fused activation %d", (int)act);
  return SPNN_OK;
}

/* The optional bias: absent, or a constant [n]. Its f32 data (or NULL) in *out. */
static spnn_status get_bias(spnn_model* m, spnn_op* op, int32_t n, const float** out) {
  *out = NULL;
  spnn_tensor* b = spnn_in(m, op, 2);
  if (!b) return SPNN_OK;
  spnn_status st;
  if ((st = spnn_expect_constant(m, b, "bias"))) return st;
  if ((st = spnn_expect_dims(m, b, 1, &n, "bias"))) return st;
  if ((st = spnn_densify(m, b))) return st;
  *out = b->data;
  return SPNN_OK;
}

static spnn_status alloc_state(spnn_model* m, spnn_op* op, size_t size, void** out) {
  *out = calloc(1, size);
  if (!*out) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = *out;
  return SPNN_OK;
}

/* Cuts rows into up to PARTS runs of whole `align`-row units (the rows % align remainder
 * goes to the last) of about equal `cost` (cost[u]: the work of unit u; NULL: equal).
 * Returns the number of parts; 0 when there are too few rows to be worth it. */
static uint32_t cut_parts(uint32_t rows, uint32_t align, const uint32_t* cost,
                          uint32_t* part_row) {
  uint32_t units = rows / align, parts = PARTS;
  while (parts > 1 && rows / parts < PART_MIN_ROWS) parts--;
  if (parts < 2 || units < parts) return 0;
  double total = 0, done = 0;
  for (uint32_t u = 0; u < units; u++) total += cost ? cost[u] : 1;
  part_row[0] = 0;
  uint32_t k = 1, u = 0;
  for (; u < units && k < parts; u++) {
    done += cost ? cost[u] : 1;
    /* close part k - 1 after unit u once it holds its share, leaving a unit per later part */
    if (done >= total * k / parts || units - (u + 1) == parts - k) part_row[k++] = (u + 1) * align;
  }
  part_row[parts] = rows;
  for (uint32_t j = 0; j < parts; j++)
    if (part_row[j + 1] <= part_row[j]) return 0;
  return parts;
}

/* Packs the sparse weight's channel parts, rows [s->part_row[k], s->part_row[k + 1]) (see
 * SPLIT_CHANNELS_BELOW), *bytes in all. */
static spnn_status pack_spmm_parts(spnn_model* m, conv_state* s, const spnn_sparse* sp,
                                   const float* bias, uint32_t pixels, size_t* bytes) {
  *bytes = 0;
  for (uint32_t k = 0; k < s->parts; k++) {
    const uint32_t r0 = s->part_row[k], r1 = s->part_row[k + 1];
    const uint32_t b0 = r0 / sp->block; /* r0 is a multiple of block */
    const uint32_t nb = k + 1 < s->parts ? (r1 - r0) / sp->block
                                         : sp->num_blocks - b0; /* with the remainder rows */
    size_t first = 0, steps = 0;
    for (uint32_t b = 0; b < b0; b++) first += sp->counts[b];
    for (uint32_t b = b0; b < b0 + nb; b++) steps += sp->counts[b];
    const size_t size = spnn_spmm_packed_bytes(r1 - r0, sp->cols, sp->block, (uint32_t)steps);
    if (!(s->part_packed[k] = spnn_alloc(size))) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
    if (spnn_spmm_pack(r1 - r0, sp->cols, sp->block, sp->counts + b0, sp->columns + first,
                       sp->values + first * sp->block, bias ? bias + r0 : NULL, pixels,
                       s->part_packed[k], &s->part_spmm[k]) != 0)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "sparse weight cannot be packed");
    *bytes += size;
  }
  return SPNN_OK;
}

/* The same for a dense weight. */
static spnn_status pack_gemm_parts(spnn_model* m, conv_state* s, const float* w,
                                   const float* bias, size_t* bytes) {
  *bytes = 0;
  for (uint32_t k = 0; k < s->parts; k++) {
    const uint32_t r0 = s->part_row[k], n = s->part_row[k + 1] - r0;
    const size_t size = spnn_gemm_packed_bytes(n, s->cols);
    if (!(s->part_packed[k] = spnn_alloc(size))) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
    spnn_gemm_pack(n, s->cols, w + (size_t)r0 * s->cols, bias ? bias + r0 : NULL, s->part_packed[k]);
    *bytes += size;
  }
  return SPNN_OK;
}

spnn_status spnn_prepare_conv(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* w = spnn_in(m, op, 1);
  spnn_tensor* y = spnn_out(m, op);
  const spnn_attr* a = op->attr;
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input"))) return st;
  if ((st = spnn_expect_ndim(m, w, 4, "weight"))) return st;
  if ((st = spnn_expect_constant(m, w, "weight"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  if (x->dims[0] < 1) return spnn_fail(m, SPNN_ERROR_FORMAT, "batch %d", x->dims[0]);
  static const char* const names[] = {"stride_h", "stride_w", "dilation_h", "dilation_w", "pad_top",
                                      "pad_left", "pad_bottom", "pad_right", "groups"};
  for (int i = 0; i < 9; i++)
    if ((st = check_range(m, names[i], a[i].i, i < 4 || i == 8 ? 1 : 0))) return st;
  float lo, hi;
  if ((st = check_act(m, a[SPNN_CONV2D_ACT].i, &lo, &hi))) return st;
  int32_t cin = x->dims[1], h = x->dims[2], wd = x->dims[3];
  int32_t cout = w->dims[0], cin_g = w->dims[1], kh = w->dims[2], kw = w->dims[3];
  int32_t groups = a[SPNN_CONV2D_GROUPS].i;
  if (kh > MAX_GEOMETRY || kw > MAX_GEOMETRY) return spnn_fail(m, SPNN_ERROR_FORMAT, "kernel too large");
  if (cin % groups || cout % groups || cin / groups != cin_g)
    return spnn_fail(m, SPNN_ERROR_FORMAT,
                     "input channels %d, weight [%d, %d, %d, %d] and groups %d do not agree", cin,
                     cout, cin_g, kh, kw, groups);
  int64_t sh = a[SPNN_CONV2D_STRIDE_H].i, sw = a[SPNN_CONV2D_STRIDE_W].i;
  int64_t dh = a[SPNN_CONV2D_DILATION_H].i, dw = a[SPNN_CONV2D_DILATION_W].i;
  int64_t pt = a[SPNN_CONV2D_PAD_TOP].i, pl = a[SPNN_CONV2D_PAD_LEFT].i;
  int64_t ph = h + pt + a[SPNN_CONV2D_PAD_BOTTOM].i - dh * (kh - 1) - 1;
  int64_t pw = wd + pl + a[SPNN_CONV2D_PAD_RIGHT].i - dw * (kw - 1) - 1;
  if (ph < 0 || pw < 0)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "the %dx%d window does not fit the padded %dx%d input", kh,
                     kw, h, wd);
  int32_t want[4] = {x->dims[0], cout, (int32_t)(ph / sh + 1), (int32_t)(pw / sw + 1)};
  if ((st = spnn_expect_dims(m, y, 4, want, "output"))) return st;
  const float* bias;
  if ((st = get_bias(m, op, cout, &bias))) return st;

  conv_state* s;
  if ((st = alloc_state(m, op, sizeof *s, (void**)&s))) return st;
  op->free_state = free_conv;
  s->batch_in = x->data;
  s->batch_out = y->data;
  s->batch = (size_t)x->dims[0];
  s->in_image = x->count / s->batch;
  s->out_image = y->count / s->batch;
  s->lo = lo;
  s->hi = hi;
  s->rows = (uint32_t)cout;
  s->cols = (uint32_t)cin;
  spnn_conv_shape cs = {(uint32_t)cin, (uint32_t)h, (uint32_t)wd, (uint32_t)cout,
                        (uint32_t)want[2], (uint32_t)want[3], (uint32_t)kh, (uint32_t)kw,
                        (uint32_t)sh, (uint32_t)sw, (uint32_t)dh, (uint32_t)dw,
                        (uint32_t)pt, (uint32_t)pl, (uint32_t)groups};
  s->cs = cs;
  size_t pixels = (size_t)want[2] * want[3];
  op->macs = (double)pixels * cout * cin_g * kh * kw;
  int pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt == 0 && pl == 0 &&
                  a[SPNN_CONV2D_PAD_BOTTOM].i == 0 && a[SPNN_CONV2D_PAD_RIGHT].i == 0 && groups == 1;
  size_t bytes;
  if (pointwise && w->sparse) {
    const spnn_sparse* sp = w->sparse;
    s->kind = CONV_SPMM;
    op->kernel = sp->block == 4   ? SPMM_NAME(SPMM_MR4, 4)
                 : sp->block == 2 ? SPMM_NAME(SPMM_MR2, 2)
                                  : SPMM_NAME(SPMM_MR1, 1);
    op->macs = (double)pixels * sp->nnz;
    if (cut_in_parts(m, pixels) && (s->parts = cut_layer_parts(s, sp, s->part_row))) {
      if ((st = pack_spmm_parts(m, s, sp, bias, (uint32_t)pixels, &bytes))) return st;
    }
    if (!s->parts) {
      bytes = spnn_spmm_packed_bytes(sp->rows, sp->cols, sp->block, sp->num_steps);
      if (!(s->packed = spnn_alloc(bytes))) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
      if (spnn_spmm_pack(sp->rows, sp->cols, sp->block, sp->counts, sp->columns, sp->values, bias,
                         (uint32_t)pixels, s->packed, &s->spmm) != 0)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "sparse weight %s cannot be packed", w->name);
    }
  } else {
    if ((st = spnn_densify(m, w))) return st;
    if (pointwise) {
      s->kind = CONV_GEMM;
      op->kernel = "gemm";
      if (cut_in_parts(m, pixels) && (s->parts = cut_layer_parts(s, NULL, s->part_row))) {
        if ((st = pack_gemm_parts(m, s, w->data, bias, &bytes))) return st;
      }
      if (!s->parts) {
        bytes = spnn_gemm_packed_bytes(s->rows, s->cols);
        if (!(s->packed = spnn_alloc(bytes))) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
        spnn_gemm_pack(s->rows, s->cols, w->data, bias, s->packed);
      }
    } else if (groups == cin && groups == cout && cin_g == 1) {
      spnn_dwconv_shape ds = {(uint32_t)cin, (uint32_t)h, (uint32_t)wd, (uint32_t)want[2],
                              (uint32_t)want[3], (uint32_t)kh, (uint32_t)kw, (uint32_t)sh,
                              (uint32_t)sw, (uint32_t)dh, (uint32_t)dw, (uint32_t)pt, (uint32_t)pl};
      s->kind = CONV_DW;
      s->ds = ds;
      s->dw = spnn_dwconv_select(&s->ds);
      op->kernel = s->dw == spnn_f32_dwconv4_3x3s1  ? "dwconv_3x3s1_c4"
                   : s->dw == spnn_f32_dwconv4_3x3s2 ? "dwconv_3x3s2_c4"
                   : s->dw == spnn_f32_dwconv_3x3s1 ? "dwconv_3x3s1"
                   : s->dw == spnn_f32_dwconv_3x3s2 ? "dwconv_3x3s2"
                   : s->dw == spnn_f32_dwconv_5x5s1 ? "dwconv_5x5s1"
                   : s->dw == spnn_f32_dwconv_5x5s2 ? "dwconv_5x5s2"
                                                    : "dwconv_generic";
      bytes = spnn_dwconv_packed_bytes(&s->ds);
      if (!(s->packed = spnn_alloc(bytes))) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
      spnn_dwconv_pack(&s->ds, w->data, bias, s->packed);
    } else {
      s->kind = CONV_KXK;
      op->kernel = "conv_im2col";
      bytes = spnn_conv_packed_bytes(&s->cs);
      size_t scratch = spnn_conv_scratch_bytes(&s->cs);
      if (!(s->packed = spnn_alloc(bytes)) || !(s->scratch = (float*)spnn_alloc(scratch)))
        return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
      spnn_conv_pack(&s->cs, w->data, bias, s->packed);
      bytes += scratch;
    }
  }
  op->state_bytes = bytes;
  op->macs *= s->batch;
  s->units = s->parts ? s->parts : s->kind == CONV_DW ? s->ds.channels : pixels;
  s->bands = 1;
  /* SpMM ranges start at multiples of its widest tile: each thread's chunk is whole tiles
   * but the layer's last, not tiles and a narrow tail that walks every column again */
  s->align = s->parts || s->kind == CONV_DW ? 1 : s->kind == CONV_SPMM ? SPMM_MR1 : 32;
  op->run = run_conv;
  return SPNN_OK;
}

/* ---- CONV_TRANSPOSE2D: scatter form, one output channel per task (scalar) ------------ */

typedef struct deconv_state {
  int32_t cin, h, w, cout, kh, kw, sh, sw, pt, pl, oh, ow;
  int32_t batch;
  const float* in;
  const float* weight; /* [cin, cout, kh, kw] */
  const float* bias;
  float* out;
  float lo, hi;
} deconv_state;

/* Tasks are (image, output channel) pairs. */
static void deconv_task(void* ctx, size_t c_begin, size_t c_end) {
  const deconv_state* s = (const deconv_state*)ctx;
  size_t plane = (size_t)s->oh * s->ow;
  for (size_t t = c_begin; t < c_end; t++) {
    size_t n = t / (size_t)s->cout, co = t % (size_t)s->cout;
    float* out = s->out + t * plane;
    const float* image = s->in + n * (size_t)s->cin * s->h * s->w;
    float b = s->bias ? s->bias[co] : 0.0f;
    for (size_t i = 0; i < plane; i++) out[i] = b;
    for (int32_t ci = 0; ci < s->cin; ci++) {
      const float* in = image + (size_t)ci * s->h * s->w;
      const float* wk = s->weight + ((size_t)ci * s->cout + co) * s->kh * s->kw;
      for (int32_t i = 0; i < s->kh; i++) {
        for (int32_t y = 0; y < s->h; y++) {
          int32_t oy = y * s->sh + i - s->pt;
          if (oy < 0 || oy >= s->oh) continue;
          for (int32_t j = 0; j < s->kw; j++) {
            float wv = wk[i * s->kw + j];
            for (int32_t x = 0; x < s->w; x++) {
              int32_t ox = x * s->sw + j - s->pl;
              if (ox >= 0 && ox < s->ow) out[(size_t)oy * s->ow + ox] += wv * in[(size_t)y * s->w + x];
            }
          }
        }
      }
    }
    for (size_t i = 0; i < plane; i++) {
      float v = out[i];
      v = v < s->lo ? s->lo : v;
      out[i] = v > s->hi ? s->hi : v;
    }
  }
}

static void run_deconv(spnn_model* m, spnn_op* op) {
  deconv_state* s = (deconv_state*)op->state;
  spnn_parallel(m, op->macs, (size_t)s->batch * s->cout, 1, deconv_task, s);
}

spnn_status spnn_prepare_conv_transpose(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* w = spnn_in(m, op, 1);
  spnn_tensor* y = spnn_out(m, op);
  const spnn_attr* a = op->attr;
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input"))) return st;
  if ((st = spnn_expect_ndim(m, w, 4, "weight"))) return st;
  if ((st = spnn_expect_constant(m, w, "weight"))) return st;
  if (x->dims[0] < 1) return spnn_fail(m, SPNN_ERROR_FORMAT, "batch %d", x->dims[0]);
  static const char* const names[] = {"stride_h", "stride_w", "pad_top", "pad_left", "pad_bottom",
                                      "pad_right"};
  for (int i = 0; i < 6; i++)
    if ((st = check_range(m, names[i], a[i].i, i < 2 ? 1 : 0))) return st;
  float lo, hi;
  if ((st = check_act(m, a[SPNN_CONV_TRANSPOSE2D_ACT].i, &lo, &hi))) return st;
  if (w->dims[0] != x->dims[1])
    return spnn_fail(m, SPNN_ERROR_FORMAT, "input has %d channels, weight %s is for %d", x->dims[1],
                     w->name, w->dims[0]);
  int64_t oh = (int64_t)(x->dims[2] - 1) * a[0].i - a[2].i - a[4].i + w->dims[2];
  int64_t ow = (int64_t)(x->dims[3] - 1) * a[1].i - a[3].i - a[5].i + w->dims[3];
  if (oh < 1 || ow < 1) return spnn_fail(m, SPNN_ERROR_FORMAT, "padding leaves no output");
  if (oh >= SPNN_MAX_ELEMENTS || ow >= SPNN_MAX_ELEMENTS)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "output too large");
  int32_t want[4] = {x->dims[0], w->dims[1], (int32_t)oh, (int32_t)ow};
  if ((st = spnn_expect_dims(m, y, 4, want, "output"))) return st;
  const float* bias;
  if ((st = get_bias(m, op, w->dims[1], &bias))) return st;
  if ((st = spnn_use_raw(m, x)) || (st = spnn_use_raw(m, w))) return st;
  if (bias && (st = spnn_use_raw(m, spnn_in(m, op, 2)))) return st;
  deconv_state* s;
  if ((st = alloc_state(m, op, sizeof *s, (void**)&s))) return st;
  op->free_state = free;
  *s = (deconv_state){x->dims[1], x->dims[2], x->dims[3], w->dims[1], w->dims[2], w->dims[3],
                      a[0].i, a[1].i, a[2].i, a[3].i, (int32_t)oh, (int32_t)ow, x->dims[0],
                      x->data, w->data, bias, y->data, lo, hi};
  op->macs = (double)x->count * w->dims[1] * w->dims[2] * w->dims[3];
  op->kernel = "deconv_scalar";
  op->run = run_deconv;
  return SPNN_OK;
}

/* ---- FULLY_CONNECTED: dense via the GEMV kernel, sparse by walking stored columns ----- */

typedef struct fc_state {
  uint32_t n, rows, cols;
  const float* x;
  const float* weight; /* dense [rows, cols] */
  const float* bias;
  float* y;
  float lo, hi;
  /* sparse: the decoded layout (see spnn_sparse), bias folded in separately */
  uint32_t block, num_blocks;
  uint32_t* counts;
  uint32_t* columns;
  float* values;
} fc_state;

static void free_fc(void* p) {
  fc_state* s = (fc_state*)p;
  spnn_dealloc(s->counts);
  spnn_dealloc(s->columns);
  spnn_dealloc(s->values);
  free(s);
}

static void fc_dense_task(void* ctx, size_t b, size_t e) {
  const fc_state* s = (const fc_state*)ctx;
  for (uint32_t r = 0; r < s->n; r++)
    spnn_f32_gemv(b, e, s->cols, s->weight, s->bias, s->x + (size_t)r * s->cols,
                  s->y + (size_t)r * s->rows, s->lo, s->hi);
}

/* Output rows of one-row blocks, four stored columns at a time: the four inputs gathered
 * into a vector and multiply-added into four partial sums (one dependency chain per lane
 * instead of one per row), summed across at the end, then the rest one by one. Blocks of
 * several rows (the last ones of a model pruned in row blocks are single rows) take one
 * vector per column, a lane per row. */
static void fc_sparse(const fc_state* s) {
  const uint32_t full = s->rows / s->block;
  for (uint32_t r = 0; r < s->n; r++) {
    const float* x = s->x + (size_t)r * s->cols;
    float* y = s->y + (size_t)r * s->rows;
    const uint32_t* col = s->columns;
    const float* val = s->values;
    uint32_t row = 0;
    for (uint32_t k = 0; k < s->num_blocks; k++) {
      const uint32_t b = k < full ? s->block : 1, count = s->counts[k];
      float acc[4] = {0, 0, 0, 0};
      uint32_t i = 0;
      if (b == 1) {
        v128_t sum = wasm_f32x4_splat(0.0f);
        for (; i + 4 <= count; i += 4, col += 4, val += 4) {
          const v128_t xv = wasm_f32x4_make(x[col[0]], x[col[1]], x[col[2]], x[col[3]]);
          sum = spnn_madd(sum, wasm_v128_load(val), xv);
        }
        acc[0] = (wasm_f32x4_extract_lane(sum, 0) + wasm_f32x4_extract_lane(sum, 1)) +
                 (wasm_f32x4_extract_lane(sum, 2) + wasm_f32x4_extract_lane(sum, 3));
        for (; i < count; i++) acc[0] += *val++ * x[*col++];
      } else if (b == 4) {
        v128_t sum = wasm_f32x4_splat(0.0f);
        for (; i < count; i++, val += 4) sum = spnn_madd(sum, wasm_v128_load(val), wasm_f32x4_splat(x[*col++]));
        wasm_v128_store(acc, sum);
      } else {
        for (; i < count; i++) {
          const float xv = x[*col++];
          for (uint32_t q = 0; q < b; q++) acc[q] += *val++ * xv;
        }
      }
      for (uint32_t q = 0; q < b; q++) {
        float o = acc[q] + (s->bias ? s->bias[row + q] : 0.0f);
        o = o < s->lo ? s->lo : o;
        y[row + q] = o > s->hi ? s->hi : o;
      }
      row += b;
    }
  }
}

static void run_fc(spnn_model* m, spnn_op* op) {
  fc_state* s = (fc_state*)op->state;
  if (s->counts) fc_sparse(s);
  else spnn_parallel(m, op->macs, s->rows, 4, fc_dense_task, s);
}

static spnn_status take_copy(spnn_model* m, void** out, const void* src, size_t bytes) {
  *out = spnn_alloc(bytes);
  if (!*out) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  memcpy(*out, src, bytes);
  return SPNN_OK;
}

spnn_status spnn_prepare_fully_connected(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* w = spnn_in(m, op, 1);
  spnn_tensor* y = spnn_out(m, op);
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 2, "input"))) return st;
  if ((st = spnn_expect_ndim(m, w, 2, "weight"))) return st;
  if ((st = spnn_expect_constant(m, w, "weight"))) return st;
  if (w->dims[1] != x->dims[1])
    return spnn_fail(m, SPNN_ERROR_FORMAT, "input has %d features, weight %s expects %d", x->dims[1],
                     w->name, w->dims[1]);
  int32_t want[2] = {x->dims[0], w->dims[0]};
  if ((st = spnn_expect_dims(m, y, 2, want, "output"))) return st;
  float lo, hi;
  if ((st = check_act(m, op->attr[SPNN_FULLY_CONNECTED_ACT].i, &lo, &hi))) return st;
  const float* bias;
  if ((st = get_bias(m, op, w->dims[0], &bias))) return st;
  if (bias && (st = spnn_use_raw(m, spnn_in(m, op, 2)))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  fc_state* s;
  if ((st = alloc_state(m, op, sizeof *s, (void**)&s))) return st;
  op->free_state = free_fc;
  s->n = (uint32_t)x->dims[0];
  s->rows = (uint32_t)w->dims[0];
  s->cols = (uint32_t)w->dims[1];
  s->x = x->data;
  s->y = y->data;
  s->bias = bias;
  s->lo = lo;
  s->hi = hi;
  if (w->sparse) {
    const spnn_sparse* sp = w->sparse;
    s->block = sp->block;
    s->num_blocks = sp->num_blocks;
    if ((st = take_copy(m, (void**)&s->counts, sp->counts, 4 * (size_t)sp->num_blocks)) ||
        (st = take_copy(m, (void**)&s->columns, sp->columns, 4 * (size_t)sp->num_steps)) ||
        (st = take_copy(m, (void**)&s->values, sp->values, 4 * (size_t)sp->nnz)))
      return st;
    op->state_bytes = 4 * ((size_t)sp->num_blocks + sp->num_steps + sp->nnz);
    op->macs = (double)s->n * sp->nnz;
    op->kernel = "fc_sparse";
  } else {
    if ((st = spnn_use_raw(m, w))) return st;
    s->weight = w->data;
    op->macs = (double)s->n * s->rows * s->cols;
    op->kernel = "gemv";
  }
  op->run = run_fc;
  return SPNN_OK;
}

/* ---- MATMUL: a [M, K] @ b [K, N], both read at run time (rows of b in vectors) ------- */

typedef struct matmul_state {
  uint32_t m, k, n;
  const float* a;
  const float* b;
  float* out;
} matmul_state;

static void matmul_task(void* ctx, size_t r_begin, size_t r_end) {
  const matmul_state* s = (const matmul_state*)ctx;
  for (size_t r = r_begin; r < r_end; r++) {
    float* out = s->out + r * s->n;
    memset(out, 0, (size_t)s->n * sizeof(float));
    for (uint32_t k = 0; k < s->k; k++) {
      const float av = s->a[r * s->k + k];
      const float* b = s->b + (size_t)k * s->n;
      const v128_t va = wasm_f32x4_splat(av);
      uint32_t j = 0;
      for (; j + 4 <= s->n; j += 4)
        wasm_v128_store(out + j, wasm_f32x4_add(wasm_v128_load(out + j),
                                                wasm_f32x4_mul(va, wasm_v128_load(b + j))));
      for (; j < s->n; j++) out[j] += av * b[j];
    }
  }
}

static void run_matmul(spnn_model* m, spnn_op* op) {
  matmul_state* s = (matmul_state*)op->state;
  spnn_parallel(m, op->macs, s->m, 1, matmul_task, s);
}

spnn_status spnn_prepare_matmul(spnn_model* m, spnn_op* op) {
  spnn_tensor* a = spnn_in(m, op, 0);
  spnn_tensor* b = spnn_in(m, op, 1);
  spnn_tensor* y = spnn_out(m, op);
  spnn_status st;
  if ((st = spnn_expect_ndim(m, a, 2, "a")) || (st = spnn_expect_ndim(m, b, 2, "b"))) return st;
  if (a->dims[1] != b->dims[0])
    return spnn_fail(m, SPNN_ERROR_FORMAT, "%s [%d, %d] and %s [%d, %d] do not multiply", a->name,
                     a->dims[0], a->dims[1], b->name, b->dims[0], b->dims[1]);
  int32_t want[2] = {a->dims[0], b->dims[1]};
  if ((st = spnn_expect_dims(m, y, 2, want, "output"))) return st;
  if ((st = spnn_use_raw(m, a)) || (st = spnn_use_raw(m, b))) return st;
  matmul_state* s;
  if ((st = alloc_state(m, op, sizeof *s, (void**)&s))) return st;
  op->free_state = free;
  *s = (matmul_state){(uint32_t)a->dims[0], (uint32_t)a->dims[1], (uint32_t)b->dims[1], a->data, b->data,
                      y->data};
  op->macs = (double)a->dims[0] * a->dims[1] * b->dims[1];
  op->kernel = "matmul_rows";
  op->run = run_matmul;
  return SPNN_OK;
}
