/* include/pipit.h */
#ifndef PIPIT_H
#define PIPIT_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
#define PIPIT_ABI_VERSION 1

typedef struct pipit_model pipit_model;      /* immutable after open; shareable across threads */
typedef struct pipit_session pipit_session;  /* one conversation; one thread at a time */

typedef int32_t pipit_status;  /* one of the values below; a plain integer across the ABI */
enum {
  PIPIT_OK = 0,
  PIPIT_ERR_INVALID_ARGUMENT = 1,  /* NULL pointer, value out of range */
  PIPIT_ERR_IO = 2,                /* missing or unreadable file */
  PIPIT_ERR_FORMAT = 3,            /* malformed or corrupt model file */
  PIPIT_ERR_UNSUPPORTED = 4,       /* valid file, feature not supported here */
  PIPIT_ERR_OUT_OF_MEMORY = 5,     /* allocation failed, or memory_limit would be exceeded */
  PIPIT_ERR_CONTEXT_FULL = 6,      /* nothing was changed */
  PIPIT_ERR_BUFFER_TOO_SMALL = 7,  /* the size out-parameter says what is needed */
  PIPIT_ERR_BUSY = 8,              /* the session is in use by another thread */
  PIPIT_ERR_CANCELLED = 9,
  PIPIT_ERR_NUMERIC = 10,          /* NaN/Inf reached the logits */
  PIPIT_ERR_INTERNAL = 11          /* a bug, including a caught panic */
};

enum { PIPIT_OPEN_NO_MMAP = 1u, PIPIT_OPEN_VERIFY = 2u };  /* flags for pipit_model_open_ex */
enum { PIPIT_KV_F16 = 0u, PIPIT_KV_F32 = 1u, PIPIT_KV_INT8 = 2u };
/* pipit_session_params.flags: check KV cache + scratch against the machine's available
   memory (MemAvailable) before allocating; PIPIT_ERR_OUT_OF_MEMORY names both figures. */
enum { PIPIT_SESSION_CHECK_MEMORY = 1u };

typedef struct pipit_model_info {
  uint32_t n_vocab, n_ctx_train, n_layer, d_model;
  int32_t bos_token, eos_token;   /* -1 when absent */
  uint64_t weights_bytes;
  const char *architecture;       /* "llama", "gemma3", ...; valid while the model lives */
  const char *name;
} pipit_model_info;

typedef struct pipit_session_params {
  uint32_t n_ctx;         /* default 2048 */
  uint32_t n_threads;     /* 0: all cores */
  uint32_t kv_type;       /* PIPIT_KV_*; default PIPIT_KV_F16 */
  uint32_t flags;         /* 0 or PIPIT_SESSION_CHECK_MEMORY */
  uint64_t memory_limit;  /* bytes for KV cache + scratch; 0: no limit */
} pipit_session_params;   /* 24 bytes, no implicit padding */

typedef struct pipit_sampler_params {
  float temperature;      /* 0: greedy. default 0.8 */
  uint32_t top_k;         /* 0: off. default 40 */
  float top_p;            /* 1: off. default 0.95 */
  float min_p;            /* 0: off. default 0.05 */
  float repeat_penalty;   /* 1: off. default 1.1 */
  uint32_t repeat_last_n; /* default 64 */
  uint64_t seed;          /* default 0 */
} pipit_sampler_params;

typedef struct pipit_memory_report { uint64_t weights_mapped, kv_cache, scratch, total; } pipit_memory_report;

/* piece: whole UTF-8 characters (bytes of a split character are held back until complete).
   Return nonzero to stop. */
typedef int (*pipit_token_callback)(const char *piece, size_t len, int32_t token, void *user);

uint32_t     pipit_abi_version(void);
const char  *pipit_status_string(pipit_status status);
const char  *pipit_last_error(void);  /* detail of this thread's last failure; never NULL */

/* The path must name a regular file (a directory, device, FIFO or socket is PIPIT_ERR_IO at
   once). pipit_model_open maps the file: the model reads its weights straight from the page
   cache, and the file must not change while the model is open. If another process truncates
   it, touching a lost page raises SIGBUS, which kills the process (the host app too): the
   kernel delivers it to whichever thread touched the page, and a library cannot turn it into
   an error soundly: it would have to install a process-wide SIGBUS handler (taking over the
   host's own handling, e.g. a crash reporter's) and jump out of Rust code mid-instruction,
   skipping destructors and leaving locks held. An app that cannot guarantee the file (it
   lives on removable storage, or another process may update it) passes PIPIT_OPEN_NO_MMAP to
   pipit_model_open_ex: the file is read into memory once, checked, and never touched again,
   so changing or deleting it afterwards cannot affect the model. */
pipit_status pipit_model_open(const char *path, pipit_model **out);
pipit_status pipit_model_open_ex(const char *path, uint32_t flags, pipit_model **out);
void         pipit_model_free(pipit_model *model);  /* NULL: no-op */
pipit_status pipit_model_get_info(const pipit_model *model, pipit_model_info *out);

void         pipit_session_params_default(pipit_session_params *out);
pipit_status pipit_memory_estimate(const pipit_model *model, const pipit_session_params *params, pipit_memory_report *out);
pipit_status pipit_session_new(const pipit_model *model, const pipit_session_params *params, pipit_session **out);
void         pipit_session_free(pipit_session *session);  /* NULL: no-op */
pipit_status pipit_session_reset(pipit_session *session);
uint32_t     pipit_session_n_past(const pipit_session *session);

pipit_status pipit_tokenize(const pipit_model *model, const char *text, size_t len, int add_bos,
                            int32_t *tokens, size_t capacity, size_t *n_tokens);
pipit_status pipit_token_to_piece(const pipit_model *model, int32_t token, const char **piece, size_t *len);

pipit_status pipit_session_eval(pipit_session *session, const int32_t *tokens, size_t n);
pipit_status pipit_session_logits(const pipit_session *session, const float **logits, size_t *n_vocab);
void         pipit_sampler_params_default(pipit_sampler_params *out);
pipit_status pipit_session_sample(pipit_session *session, const pipit_sampler_params *params, int32_t *token);
pipit_status pipit_session_score(pipit_session *session, const int32_t *tokens, size_t n, double *logprob);
pipit_status pipit_generate(pipit_session *session, const char *prompt, size_t len,
                            const pipit_sampler_params *params, uint32_t max_tokens,
                            pipit_token_callback callback, void *user);
pipit_status pipit_session_cancel(pipit_session *session);  /* any thread; the running call returns PIPIT_ERR_CANCELLED */

#ifdef __cplusplus
}
#endif
#endif /* PIPIT_H */
