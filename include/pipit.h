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
typedef struct pipit_constraint pipit_constraint;  /* compiled structured-output constraint; immutable */

typedef int32_t pipit_status;  /* one of the values below; a plain integer across the ABI */
enum {
  PIPIT_OK = 0,
  PIPIT_ERR_INVALID_ARGUMENT = 1,  /* NULL pointer, value out of range */
  PIPIT_ERR_IO = 2,                /* missing or unreadable file */
  PIPIT_ERR_FORMAT = 3,            /* malformed or corrupt model file */
  PIPIT_ERR_UNSUPPORTED = 4,       /* valid file, feature not supported here */
  PIPIT_ERR_OUT_OF_MEMORY = 5,     /* allocation failed, or memory_limit would be exceeded */
  PIPIT_ERR_CONTEXT_FULL = 6,      /* the tokens do not fit; nothing was changed */
  PIPIT_ERR_BUFFER_TOO_SMALL = 7,  /* the size out-parameter says what is needed */
  PIPIT_ERR_BUSY = 8,              /* the session is in use by another thread */
  PIPIT_ERR_CANCELLED = 9,
  PIPIT_ERR_NUMERIC = 10,          /* NaN/Inf reached the logits */
  PIPIT_ERR_INTERNAL = 11,         /* a bug, including a caught panic */
  PIPIT_ERR_INCOMPLETE = 12        /* a constrained output cannot complete within the budget;
                                      pipit_last_error says how many more bytes it needed */
};

enum { PIPIT_OPEN_NO_MMAP = 1u, PIPIT_OPEN_VERIFY = 2u };  /* flags for pipit_model_open_ex */
enum { PIPIT_KV_F16 = 0u, PIPIT_KV_F32 = 1u, PIPIT_KV_INT8 = 2u };
/* pipit_session_params.flags: check KV cache + scratch against the machine's available
   memory (MemAvailable) before allocating; PIPIT_ERR_OUT_OF_MEMORY names both figures. */
enum { PIPIT_SESSION_CHECK_MEMORY = 1u };

/* Why the last pipit_generate ended (pipit_session_stop_reason). */
enum {
  PIPIT_STOP_NONE = 0,          /* none finished since the session was created or reset, or it failed */
  PIPIT_STOP_END_OF_TEXT = 1,   /* the model produced an end-of-generation token (not appended) */
  PIPIT_STOP_MAX_TOKENS = 2,    /* max_tokens tokens were generated */
  PIPIT_STOP_STOP_STRING = 3,   /* the output ended with a stop string (not delivered; its tokens are in the context) */
  PIPIT_STOP_CALLBACK = 4,      /* the callback returned nonzero */
  PIPIT_STOP_CONTEXT_FULL = 5   /* the context is full; every generated token is in it */
};

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
/* Appends the prompt (BOS only on an empty context), then samples, appends and streams up to
   max_tokens tokens. Ends with PIPIT_OK at end of text, max_tokens, a stop string, a nonzero
   callback return or a full context (pipit_session_stop_reason tells which). A prompt that does
   not fit is PIPIT_ERR_CONTEXT_FULL and changes nothing; on another error (a cancel) the tokens
   generated so far stay in the context. Text that might still become a stop string is held back
   until resolved; a stop string is never delivered. */
pipit_status pipit_generate(pipit_session *session, const char *prompt, size_t len,
                            const pipit_sampler_params *params, uint32_t max_tokens,
                            pipit_token_callback callback, void *user);
pipit_status pipit_session_cancel(pipit_session *session);  /* any thread; the running call returns PIPIT_ERR_CANCELLED */

/* Stop strings pipit_generate honours until changed: n NUL-terminated UTF-8 strings, none
   empty (copied). NULL/0 clears them. */
pipit_status pipit_session_set_stop(pipit_session *session, const char *const *stops, size_t n);
/* *reason = PIPIT_STOP_* of the last pipit_generate. */
pipit_status pipit_session_stop_reason(const pipit_session *session, int32_t *reason);
/* Rewinds the context to its first n_past tokens (n_past <= pipit_session_n_past). The logits
   become those after token n_past-1 (recomputed), or none at 0. */
pipit_status pipit_session_truncate(pipit_session *session, uint32_t n_past);
/* The state (tokens, KV cache below n_past, logits), tagged with the model file, the KV type and
   n_ctx, versioned and checksummed. *needed = its size; capacity < *needed is
   PIPIT_ERR_BUFFER_TOO_SMALL (buf may then be NULL). */
pipit_status pipit_session_save(const pipit_session *session, void *buf, size_t capacity, size_t *needed);
/* Restores a saved state. Another model's, KV type's or n_ctx's state, or a truncated or altered
   buffer, is PIPIT_ERR_INVALID_ARGUMENT and changes nothing. */
pipit_status pipit_session_load(pipit_session *session, const void *buf, size_t len);
/* Appends the prompt (as pipit_generate does), then scores each option as its continuation:
   logprobs[i] = sum of its tokens' natural-log probabilities; *best = index of the largest (the
   first on ties). The prompt is evaluated once; afterwards the context holds it and nothing of
   the options. On error nothing changes. */
pipit_status pipit_choose(pipit_session *session, const char *prompt, size_t len,
                          const char *const *options, size_t n_options, double *logprobs, size_t *best);
/* Searches over several sequences (ABI 1 additions). A session made by pipit_session_new_ex
   runs up to n_seq_max sequences side by side (their memory is reserved at creation; the
   sequences share the KV cache's n_ctx positions, a shared prefix stored once);
   pipit_session_new is n_seq_max = 1. */
pipit_status pipit_session_new_ex(const pipit_model *model, const pipit_session_params *params,
                                  uint32_t n_seq_max, pipit_session **out);
/* Beam search after appending prompt (len 0: continue from the current logits): beams
   (1..=n_seq_max) hypotheses, at most max_tokens tokens each, ranked by
   sum(log p) / length^length_penalty (length counts the end-of-text token; 1 beam = greedy).
   *text: the best hypothesis's UTF-8 text, NUL-terminated, owned by the session until its next
   call; *logprob: its summed log-probability. On success the context is the previous context,
   the prompt and the best hypothesis; on failure nothing changes. */
pipit_status pipit_beam_search(pipit_session *session, const char *prompt, size_t len,
                               uint32_t beams, float length_penalty, uint32_t max_tokens,
                               const char **text, size_t *text_len, double *logprob);
/* Chat: a conversation rendered with the model's chat template exactly as `pipit chat` does,
   up to the start of the assistant's reply (generate from it with pipit_generate). The
   messages are an optional "system" one, then "user" and "assistant" in turn, ending with
   "user". template: NULL for the model's own (PIPIT_ERR_UNSUPPORTED when it has none the
   library knows), or "chatml", "gemma", "llama3". Writes the text and a NUL to buf; *len is
   the text's length without the NUL, also on PIPIT_ERR_BUFFER_TOO_SMALL (capacity <= *len). */
typedef struct pipit_chat_message {
  const char *role;     /* "system", "user" or "assistant" */
  const char *content;  /* NUL-terminated UTF-8 */
} pipit_chat_message;

pipit_status pipit_chat_render(const pipit_model *model, const char *template_name,
                               const pipit_chat_message *messages, size_t n,
                               char *buf, size_t capacity, size_t *len);

/* 1 when the model's tokenizer puts BOS before a text that opens a context (as pipit_generate
   and the CLI do; pipit_tokenize's add_bos adds it whenever the model has one), else 0. */
int          pipit_model_adds_bos(const pipit_model *model);
/* Structured output. A constraint is compiled once for a model's vocabulary. A session
   given one samples only tokens it allows; pipit_session_eval of a token it forbids is
   PIPIT_ERR_INVALID_ARGUMENT with nothing changed; pipit_generate restarts it at the start
   of each call's generated output (the prompt is not constrained) and fails with
   PIPIT_ERR_INCOMPLETE when no completion fits in max_tokens. */
pipit_status pipit_constraint_regex(const pipit_model *model, const char *pattern, pipit_constraint **out);
pipit_status pipit_constraint_json_schema(const pipit_model *model, const char *schema_json, pipit_constraint **out);  /* "": any JSON */
pipit_status pipit_constraint_gbnf(const pipit_model *model, const char *grammar, pipit_constraint **out);
pipit_status pipit_constraint_choices(const pipit_model *model, const char *const *choices, size_t n, pipit_constraint **out);
void         pipit_constraint_free(pipit_constraint *constraint);  /* NULL: no-op; sessions keep their own reference */
pipit_status pipit_session_set_constraint(pipit_session *session, const pipit_constraint *constraint);  /* NULL clears */

#ifdef __cplusplus
}
#endif
#endif /* PIPIT_H */
