/* The whole C API on one model, single-threaded: every function, its success path and its
 * error paths. Usage: api MODEL MALFORMED_FILE MISSING_FILE TEXT [BAD_CHECKSUM_FILE]
 * TEXT must tokenize to at least 3 tokens and round-trip through the token pieces;
 * BAD_CHECKSUM_FILE is a well-formed model whose tensor data does not match its CRC. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* Collects generated text; returns nonzero after `stop_after` pieces when that is > 0. */
typedef struct {
  char data[1 << 16];
  size_t len;
  int calls;
  int stop_after;
  int bad_token;
  int32_t n_vocab;
} text_buf;

static int collect(const char *piece, size_t len, int32_t token, void *user) {
  text_buf *t = user;
  if (token < 0 || token >= t->n_vocab || piece == NULL) t->bad_token = 1;
  if (t->len + len < sizeof t->data) {
    memcpy(t->data + t->len, piece, len);
    t->len += len;
  }
  t->calls++;
  return t->stop_after > 0 && t->calls >= t->stop_after;
}

static void reset_buf(text_buf *t, int32_t n_vocab, int stop_after) {
  memset(t, 0, sizeof *t);
  t->n_vocab = n_vocab;
  t->stop_after = stop_after;
}

static size_t argmax(const float *x, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

static pipit_session_params params_ctx(uint32_t n_ctx) {
  pipit_session_params sp;
  pipit_session_params_default(&sp);
  sp.n_ctx = n_ctx;
  sp.n_threads = 2;
  return sp;
}

/* Records each delivered piece's end, to find token boundaries in the text. */
typedef struct {
  char data[1 << 14];
  size_t len;
  size_t ends[256];
  int n;
} pieces;

static int record(const char *piece, size_t len, int32_t token, void *user) {
  (void)token;
  pieces *p = user;
  if (p->len + len < sizeof p->data && p->n < 256) {
    memcpy(p->data + p->len, piece, len);
    p->len += len;
    p->ends[p->n++] = p->len;
  }
  return 0;
}

static int printable(char c) { return c >= 0x21 && c <= 0x7e; }

/* The first occurrence of needle (n bytes) in hay, or -1. */
static long find(const char *hay, size_t len, const char *needle, size_t n) {
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(hay + i, needle, n) == 0) return (long)i;
  return -1;
}

/* Stop strings, stop reasons, truncate, save/load and choose. */
static void state_functions(pipit_model *m, pipit_session_params sp, const pipit_sampler_params *greedy,
                            const int32_t *toks, size_t n_text, const char *text, size_t text_len) {
  pipit_session *s = NULL;
  OK(pipit_session_new(m, &sp, &s));
  const float *lg = NULL;
  size_t nv = 0;
  int32_t reason = -1;

  /* ---- stop strings ---- */
  OK(pipit_generate(s, text, text_len, greedy, 0, NULL, NULL));
  const uint32_t past_prompt = pipit_session_n_past(s);
  OK(pipit_session_stop_reason(s, &reason));
  CHECK(reason == PIPIT_STOP_MAX_TOKENS);
  OK(pipit_session_reset(s));
  OK(pipit_session_stop_reason(s, &reason));
  CHECK(reason == PIPIT_STOP_NONE);
  static pieces full, stopped;
  memset(&full, 0, sizeof full);
  OK(pipit_generate(s, text, text_len, greedy, 24, record, &full));
  /* A stop string of the last byte of one piece and the first of the next, found nowhere
   * earlier: it spans two tokens. */
  int k = 0;
  char stop[3] = {0, 0, 0};
  for (int i = 1; i < full.n && k == 0; i++) {
    size_t at = full.ends[i - 1];
    if (at == 0 || full.ends[i] == at) continue;
    if (!printable(full.data[at - 1]) || !printable(full.data[at])) continue;
    memcpy(stop, full.data + at - 1, 2);
    if (find(full.data, full.len, stop, 2) == (long)(at - 1)) k = i;
  }
  if (k > 0) {
    const char *stops[2] = {"\x01never", stop};
    OK(pipit_session_set_stop(s, stops, 2));
    OK(pipit_session_reset(s));
    memset(&stopped, 0, sizeof stopped);
    OK(pipit_generate(s, text, text_len, greedy, 24, record, &stopped));
    OK(pipit_session_stop_reason(s, &reason));
    CHECK(reason == PIPIT_STOP_STOP_STRING);
    /* Output ends before the stop string; the context holds the tokens that spelled it. */
    CHECK(stopped.len == full.ends[k - 1] - 1 && memcmp(stopped.data, full.data, stopped.len) == 0);
    CHECK(pipit_session_n_past(s) == past_prompt + (uint32_t)k + 1);
    /* Invalid lists change nothing. */
    const char *with_null[2] = {"a", NULL};
    EXPECT(pipit_session_set_stop(s, with_null, 2), PIPIT_ERR_INVALID_ARGUMENT);
    const char *with_empty[1] = {""};
    EXPECT(pipit_session_set_stop(s, with_empty, 1), PIPIT_ERR_INVALID_ARGUMENT);
    const char *not_utf8[1] = {"\xc3"};
    EXPECT(pipit_session_set_stop(s, not_utf8, 1), PIPIT_ERR_INVALID_ARGUMENT);
    OK(pipit_session_reset(s));
    memset(&stopped, 0, sizeof stopped);
    OK(pipit_generate(s, text, text_len, greedy, 24, record, &stopped));
    CHECK(stopped.len == full.ends[k - 1] - 1);
    /* NULL clears: the whole text again. */
    OK(pipit_session_set_stop(s, NULL, 0));
    OK(pipit_session_reset(s));
    memset(&stopped, 0, sizeof stopped);
    OK(pipit_generate(s, text, text_len, greedy, 24, record, &stopped));
    CHECK(stopped.len == full.len && memcmp(stopped.data, full.data, full.len) == 0);
    printf("api: stop string across tokens checked\n");
  }
  EXPECT(pipit_session_set_stop(NULL, NULL, 0), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_session_set_stop(s, NULL, 5));

  /* ---- truncate ---- */
  OK(pipit_session_reset(s));
  OK(pipit_session_eval(s, toks, n_text));
  OK(pipit_session_logits(s, &lg, &nv));
  float *all = malloc(nv * sizeof *all), *first = malloc(nv * sizeof *first);
  memcpy(all, lg, nv * sizeof *all);
  EXPECT(pipit_session_truncate(NULL, 1), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_truncate(s, (uint32_t)n_text + 1), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(s) == n_text);
  OK(pipit_session_truncate(s, (uint32_t)n_text));
  OK(pipit_session_logits(s, &lg, &nv));
  CHECK(memcmp(lg, all, nv * sizeof *all) == 0);
  OK(pipit_session_truncate(s, 1));
  CHECK(pipit_session_n_past(s) == 1);
  OK(pipit_session_logits(s, &lg, &nv));
  memcpy(first, lg, nv * sizeof *first);
  /* The logits after token 0 are those of evaluating it alone. */
  pipit_session *one = NULL;
  OK(pipit_session_new(m, &sp, &one));
  OK(pipit_session_eval(one, toks, 1));
  OK(pipit_session_logits(one, &lg, &nv));
  CHECK(memcmp(lg, first, nv * sizeof *first) == 0);
  pipit_session_free(one);
  /* Re-evaluating the same tokens gives bit-identical logits. */
  OK(pipit_session_eval(s, toks + 1, n_text - 1));
  OK(pipit_session_logits(s, &lg, &nv));
  CHECK(memcmp(lg, all, nv * sizeof *all) == 0);
  OK(pipit_session_truncate(s, 0));
  CHECK(pipit_session_n_past(s) == 0);
  EXPECT(pipit_session_logits(s, &lg, &nv), PIPIT_ERR_INVALID_ARGUMENT);

  /* ---- save and load ---- */
  OK(pipit_session_eval(s, toks, n_text));
  size_t needed = 0;
  EXPECT(pipit_session_save(NULL, NULL, 0, &needed), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_save(s, NULL, 0, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_save(s, NULL, 0, &needed), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(needed > n_text * 4);
  unsigned char *state = malloc(needed), *again = malloc(needed);
  size_t needed2 = 0;
  EXPECT(pipit_session_save(s, state, needed - 1, &needed2), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(needed2 == needed);
  EXPECT(pipit_session_save(s, NULL, needed, &needed2), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_session_save(s, state, needed, &needed2));
  CHECK(needed2 == needed);
  pieces *cont = calloc(2, sizeof *cont);
  OK(pipit_generate(s, NULL, 0, greedy, 8, record, &cont[0]));
  /* Load into a fresh session: same context, same logits, same greedy text. */
  pipit_session *t = NULL;
  OK(pipit_session_new(m, &sp, &t));
  EXPECT(pipit_session_load(NULL, state, needed), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_load(t, NULL, needed), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_load(t, state, needed - 1), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(strstr(pipit_last_error(), "truncated") != NULL);
  state[needed / 2] ^= 0x10;
  EXPECT(pipit_session_load(t, state, needed), PIPIT_ERR_INVALID_ARGUMENT);
  state[needed / 2] ^= 0x10;
  CHECK(pipit_session_n_past(t) == 0);
  OK(pipit_session_load(t, state, needed));
  CHECK(pipit_session_n_past(t) == n_text);
  OK(pipit_session_logits(t, &lg, &nv));
  CHECK(memcmp(lg, all, nv * sizeof *all) == 0);
  OK(pipit_generate(t, NULL, 0, greedy, 8, record, &cont[1]));
  CHECK(cont[0].len == cont[1].len && memcmp(cont[0].data, cont[1].data, cont[0].len) == 0);
  /* A failed load leaves the session byte-identical: its saved state does not move. */
  size_t n_t = 0;
  EXPECT(pipit_session_save(t, NULL, 0, &n_t), PIPIT_ERR_BUFFER_TOO_SMALL);
  unsigned char *before = malloc(n_t), *after = malloc(n_t);
  OK(pipit_session_save(t, before, n_t, &n_t));
  EXPECT(pipit_session_load(t, state, needed - 1), PIPIT_ERR_INVALID_ARGUMENT);
  state[3] ^= 0x01;
  EXPECT(pipit_session_load(t, state, needed), PIPIT_ERR_INVALID_ARGUMENT);
  state[3] ^= 0x01;
  OK(pipit_session_save(t, after, n_t, &n_t));
  CHECK(memcmp(before, after, n_t) == 0);
  /* Another n_ctx is refused. */
  pipit_session_params other = sp;
  other.n_ctx = sp.n_ctx - 1;
  pipit_session *u = NULL;
  OK(pipit_session_new(m, &other, &u));
  EXPECT(pipit_session_load(u, state, needed), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(u) == 0);
  pipit_session_free(u);
  free(before);
  free(after);
  free(again);

  /* ---- choose ---- */
  OK(pipit_session_reset(t));
  const char *options[3] = {text, " x", "\n"};
  double lps[3] = {1.0, 1.0, 1.0};
  size_t best = 99;
  EXPECT(pipit_choose(NULL, text, text_len, options, 3, lps, &best), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_choose(t, NULL, text_len, options, 3, lps, &best), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_choose(t, text, text_len, NULL, 3, lps, &best), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_choose(t, text, text_len, options, 0, lps, &best), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_choose(t, text, text_len, options, 3, NULL, &best), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_choose(t, text, text_len, options, 3, lps, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  const char *null_option[2] = {"a", NULL};
  EXPECT(pipit_choose(t, text, text_len, null_option, 2, lps, &best), PIPIT_ERR_INVALID_ARGUMENT);
  const char *empty_option[2] = {"a", ""};
  EXPECT(pipit_choose(t, text, text_len, empty_option, 2, lps, &best), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(t) == 0 && best == 99);
  OK(pipit_choose(t, text, text_len, options, 3, lps, &best));
  /* The context holds the prompt only: as after evaluating it. */
  CHECK(pipit_session_n_past(t) == past_prompt);
  OK(pipit_session_logits(t, &lg, &nv));
  memcpy(first, lg, nv * sizeof *first);
  for (int i = 0; i < 3; i++) CHECK(isfinite(lps[i]) && lps[i] < 0.0);
  CHECK(lps[best] >= lps[0] && lps[best] >= lps[1] && lps[best] >= lps[2]);
  /* Each equals scoring the option after the prompt. */
  for (int i = 0; i < 3; i++) {
    int32_t ids[256];
    size_t n_ids = 0;
    OK(pipit_tokenize(m, options[i], strlen(options[i]), 0, ids, 256, &n_ids));
    OK(pipit_session_reset(s));
    OK(pipit_generate(s, text, text_len, greedy, 0, NULL, NULL));
    OK(pipit_session_logits(s, &lg, &nv));
    CHECK(memcmp(lg, first, nv * sizeof *first) == 0);
    double lp = 0.0;
    OK(pipit_session_score(s, ids, n_ids, &lp));
    CHECK(fabs(lp - lps[i]) <= 1e-9 * (1.0 + fabs(lp)));
  }
  /* Options that do not fit: CONTEXT_FULL, nothing changed. */
  pipit_session_params tight = sp;
  tight.n_ctx = past_prompt + 1;
  OK(pipit_session_new(m, &tight, &u));
  EXPECT(pipit_choose(u, text, text_len, options, 3, lps, &best), PIPIT_ERR_CONTEXT_FULL);
  CHECK(pipit_session_n_past(u) == 0);
  pipit_session_free(u);

  pipit_session_free(t);
  pipit_session_free(s);
  free(cont);
  free(state);
  free(all);
  free(first);
}

int main(int argc, char **argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr, "usage: %s MODEL MALFORMED_FILE MISSING_FILE TEXT [BAD_CHECKSUM_FILE]\n", argv[0]);
    return 2;
  }
  const char *path = argv[1], *malformed = argv[2], *missing = argv[3], *text = argv[4];
  size_t text_len = strlen(text);

  /* ---- library ---- */
  CHECK(pipit_abi_version() == PIPIT_ABI_VERSION);
  CHECK(pipit_last_error() != NULL && pipit_last_error()[0] == '\0');
  for (int s = PIPIT_OK; s <= PIPIT_ERR_INTERNAL; s++) {
    CHECK(pipit_status_string(s) != NULL && strlen(pipit_status_string(s)) > 0);
    for (int t = PIPIT_OK; t < s; t++) CHECK(strcmp(pipit_status_string(s), pipit_status_string(t)) != 0);
  }
  CHECK(pipit_status_string(-1) != NULL && pipit_status_string(1000) != NULL);

  /* The void functions treat NULL as a no-op. */
  pipit_model_free(NULL);
  pipit_session_free(NULL);
  pipit_session_params_default(NULL);
  pipit_sampler_params_default(NULL);
  CHECK(pipit_session_n_past(NULL) == 0);

  /* ---- opening ---- */
  pipit_model *m = (pipit_model *)&argc; /* garbage that must be overwritten with NULL */
  EXPECT(pipit_model_open(NULL, &m), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(m == NULL);
  CHECK(strstr(pipit_last_error(), "path") != NULL);
  EXPECT(pipit_model_open(path, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  m = (pipit_model *)&argc;
  EXPECT(pipit_model_open(missing, &m), PIPIT_ERR_IO);
  CHECK(m == NULL);
  CHECK(strstr(pipit_last_error(), missing) != NULL);
  const char *err = pipit_last_error();
  CHECK(pipit_last_error() == err); /* reading the message is not a failure */
  EXPECT(pipit_model_open(malformed, &m), PIPIT_ERR_FORMAT);
  CHECK(m == NULL && strlen(pipit_last_error()) > 0);
  EXPECT(pipit_model_open_ex(malformed, PIPIT_OPEN_NO_MMAP, &m), PIPIT_ERR_FORMAT);
  EXPECT(pipit_model_open_ex(path, 4u, &m), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(m == NULL);
  if (argc == 6) { /* checksums are only read with PIPIT_OPEN_VERIFY */
    OK(pipit_model_open_ex(argv[5], PIPIT_OPEN_NO_MMAP, &m));
    pipit_model_free(m);
    EXPECT(pipit_model_open_ex(argv[5], PIPIT_OPEN_VERIFY, &m), PIPIT_ERR_FORMAT);
    CHECK(m == NULL && strstr(pipit_last_error(), "checksum") != NULL);
  }

  pipit_model_info info, info2;
  OK(pipit_model_open_ex(path, PIPIT_OPEN_NO_MMAP | PIPIT_OPEN_VERIFY, &m));
  CHECK(m != NULL);
  OK(pipit_model_get_info(m, &info2));
  pipit_model_free(m);

  OK(pipit_model_open(path, &m));
  CHECK(m != NULL);
  EXPECT(pipit_model_get_info(NULL, &info), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_model_get_info(m, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_model_get_info(m, &info));
  CHECK(info.n_vocab > 0 && info.n_ctx_train > 0 && info.n_layer > 0 && info.d_model > 0);
  CHECK(info.weights_bytes > 0 && info.weights_bytes == info2.weights_bytes);
  CHECK(info.n_vocab == info2.n_vocab && info.n_layer == info2.n_layer);
  CHECK(info.architecture != NULL && strcmp(info.architecture, "llama") == 0);
  CHECK(info.name != NULL);
  CHECK(info.bos_token >= -1 && info.bos_token < (int32_t)info.n_vocab);
  CHECK(info.eos_token >= -1 && info.eos_token < (int32_t)info.n_vocab);
  const int32_t n_vocab = (int32_t)info.n_vocab;

  /* ---- defaults ---- */
  pipit_session_params sp;
  memset(&sp, 0xff, sizeof sp);
  pipit_session_params_default(&sp);
  CHECK(sp.n_ctx == 2048 && sp.n_threads == 0 && sp.kv_type == PIPIT_KV_F16 && sp.flags == 0 &&
        sp.memory_limit == 0);
  pipit_sampler_params greedy, dflt;
  memset(&dflt, 0xff, sizeof dflt);
  pipit_sampler_params_default(&dflt);
  CHECK(dflt.temperature == 0.8f && dflt.top_k == 40 && dflt.top_p == 0.95f && dflt.min_p == 0.05f &&
        dflt.repeat_penalty == 1.1f && dflt.repeat_last_n == 64 && dflt.seed == 0);
  greedy = dflt;
  greedy.temperature = 0.0f;

  /* ---- tokens ---- */
  size_t n = 12345;
  EXPECT(pipit_tokenize(NULL, text, text_len, 0, NULL, 0, &n), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_tokenize(m, text, text_len, 0, NULL, 0, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_tokenize(m, NULL, 3, 0, NULL, 0, &n), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_tokenize(m, "\xff\xfe", 2, 0, NULL, 0, &n), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(strstr(pipit_last_error(), "UTF-8") != NULL);
  OK(pipit_tokenize(m, NULL, 0, 0, NULL, 0, &n));
  CHECK(n == 0);

  n = 0;
  EXPECT(pipit_tokenize(m, text, text_len, 0, NULL, 0, &n), PIPIT_ERR_BUFFER_TOO_SMALL);
  const size_t n_text = n;
  CHECK(n_text >= 3);
  int32_t *toks = malloc((n_text + 1) * sizeof *toks);
  n = 0;
  EXPECT(pipit_tokenize(m, text, text_len, 0, toks, n_text - 1, &n), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(n == n_text);
  EXPECT(pipit_tokenize(m, text, text_len, 0, NULL, n_text, &n), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_tokenize(m, text, text_len, 0, toks, n_text, &n));
  CHECK(n == n_text);
  for (size_t i = 0; i < n_text; i++) CHECK(toks[i] >= 0 && toks[i] < n_vocab);
  if (info.bos_token >= 0) {
    int32_t *with_bos = malloc((n_text + 1) * sizeof *with_bos);
    OK(pipit_tokenize(m, text, text_len, 1, with_bos, n_text + 1, &n));
    CHECK(n == n_text + 1 && with_bos[0] == info.bos_token);
    CHECK(memcmp(with_bos + 1, toks, n_text * sizeof *toks) == 0);
    free(with_bos);
  }

  /* The pieces spell the text again; they point into the model. */
  char spelled[4096];
  size_t spelled_len = 0;
  for (size_t i = 0; i < n_text; i++) {
    const char *piece = NULL;
    size_t len = 0;
    OK(pipit_token_to_piece(m, toks[i], &piece, &len));
    CHECK(piece != NULL && spelled_len + len < sizeof spelled);
    memcpy(spelled + spelled_len, piece, len);
    spelled_len += len;
  }
  CHECK(spelled_len == text_len && memcmp(spelled, text, text_len) == 0);
  const char *piece = NULL;
  size_t piece_len = 0;
  EXPECT(pipit_token_to_piece(m, -1, &piece, &piece_len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_token_to_piece(m, n_vocab, &piece, &piece_len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_token_to_piece(NULL, toks[0], &piece, &piece_len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_token_to_piece(m, toks[0], NULL, &piece_len), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_token_to_piece(m, toks[0], &piece, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  if (info.eos_token >= 0) {
    OK(pipit_token_to_piece(m, info.eos_token, &piece, &piece_len));
    CHECK(piece != NULL && piece_len == 0); /* control tokens have no text */
  }

  /* ---- memory ---- */
  const uint32_t n_ctx = info.n_ctx_train < 256 ? info.n_ctx_train : 256;
  CHECK(n_ctx >= n_text + 8);
  sp = params_ctx(n_ctx);
  pipit_memory_report rep;
  EXPECT(pipit_memory_estimate(NULL, &sp, &rep), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_memory_estimate(m, NULL, &rep), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_memory_estimate(m, &sp, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_memory_estimate(m, &sp, &rep));
  CHECK(rep.kv_cache > 0 && rep.scratch > 0 && rep.weights_mapped >= info.weights_bytes);
  CHECK(rep.total == rep.weights_mapped + rep.kv_cache + rep.scratch);
  pipit_memory_report rep2;
  sp.n_ctx = n_ctx / 2;
  OK(pipit_memory_estimate(m, &sp, &rep2));
  CHECK(rep2.kv_cache < rep.kv_cache);
  sp.n_ctx = n_ctx;

  /* ---- sessions: creation errors ---- */
  pipit_session *s = (pipit_session *)&argc;
  EXPECT(pipit_session_new(NULL, &sp, &s), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(s == NULL);
  EXPECT(pipit_session_new(m, NULL, &s), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_new(m, &sp, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  pipit_session_params bad = sp;
  bad.kv_type = 3;
  EXPECT(pipit_session_new(m, &bad, &s), PIPIT_ERR_INVALID_ARGUMENT);
  bad = sp;
  bad.flags = 2; /* unknown (1 is PIPIT_SESSION_CHECK_MEMORY) */
  EXPECT(pipit_session_new(m, &bad, &s), PIPIT_ERR_INVALID_ARGUMENT);
  bad.flags = PIPIT_SESSION_CHECK_MEMORY; /* a small session fits in any machine */
  EXPECT(pipit_session_new(m, &bad, &s), PIPIT_OK);
  pipit_session_free(s);
  s = NULL;
  bad = sp;
  bad.n_ctx = 0;
  EXPECT(pipit_session_new(m, &bad, &s), PIPIT_ERR_INVALID_ARGUMENT);
  bad.n_ctx = info.n_ctx_train + 1;
  EXPECT(pipit_session_new(m, &bad, &s), PIPIT_ERR_INVALID_ARGUMENT);
  bad = sp;
  bad.memory_limit = rep.kv_cache + rep.scratch - 1;
  s = (pipit_session *)&argc;
  EXPECT(pipit_session_new(m, &bad, &s), PIPIT_ERR_OUT_OF_MEMORY);
  CHECK(s == NULL && strstr(pipit_last_error(), "limit") != NULL);
  EXPECT(pipit_memory_estimate(m, &bad, &rep2), PIPIT_OK); /* the estimate itself is fine */
  /* Each KV cache type: the limit is checked against its own estimate, exactly. */
  uint64_t kv_bytes[3] = {0, 0, 0};
  for (uint32_t kv = PIPIT_KV_F16; kv <= PIPIT_KV_INT8; kv++) {
    pipit_session_params p = sp;
    pipit_memory_report r;
    p.kv_type = kv;
    OK(pipit_memory_estimate(m, &p, &r));
    kv_bytes[kv] = r.kv_cache;
    p.memory_limit = r.kv_cache + r.scratch - 1;
    EXPECT(pipit_session_new(m, &p, &s), PIPIT_ERR_OUT_OF_MEMORY);
    p.memory_limit = r.kv_cache + r.scratch;
    pipit_status st = pipit_session_new(m, &p, &s);
    if (kv == PIPIT_KV_INT8 && st == PIPIT_ERR_UNSUPPORTED) { /* head_dim not a multiple of 32 */
      CHECK(strstr(pipit_last_error(), "head_dim") != NULL);
      continue;
    }
    EXPECT(st, PIPIT_OK);
    OK(pipit_session_eval(s, toks, n_text));
    pipit_session_free(s);
  }
  CHECK(kv_bytes[PIPIT_KV_F16] == rep.kv_cache); /* F16 is the default */
  CHECK(kv_bytes[PIPIT_KV_F32] == 2 * kv_bytes[PIPIT_KV_F16]);
  CHECK(kv_bytes[PIPIT_KV_INT8] < kv_bytes[PIPIT_KV_F16]);

  /* ---- eval, logits, sample ---- */
  OK(pipit_session_new(m, &sp, &s));
  CHECK(pipit_session_n_past(s) == 0);
  const float *logits = NULL;
  size_t nv = 0;
  EXPECT(pipit_session_logits(s, &logits, &nv), PIPIT_ERR_INVALID_ARGUMENT); /* nothing evaluated */
  int32_t tok = -5;
  EXPECT(pipit_session_sample(s, &greedy, &tok), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_eval(NULL, toks, n_text), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_eval(s, NULL, 3), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_eval(s, toks, 0), PIPIT_ERR_INVALID_ARGUMENT);
  int32_t bad_toks[3] = {toks[0], -1, toks[1]};
  EXPECT(pipit_session_eval(s, bad_toks, 3), PIPIT_ERR_INVALID_ARGUMENT);
  bad_toks[1] = n_vocab;
  EXPECT(pipit_session_eval(s, bad_toks, 3), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(s) == 0);

  OK(pipit_session_eval(s, toks, n_text));
  CHECK(pipit_session_n_past(s) == n_text);
  EXPECT(pipit_session_logits(NULL, &logits, &nv), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_logits(s, NULL, &nv), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_logits(s, &logits, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_session_logits(s, &logits, &nv));
  CHECK(logits != NULL && nv == (size_t)n_vocab);
  for (size_t i = 0; i < nv; i++) CHECK(isfinite(logits[i]));
  float *saved = malloc(nv * sizeof *saved);
  memcpy(saved, logits, nv * sizeof *saved);

  EXPECT(pipit_session_sample(NULL, &greedy, &tok), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_sample(s, NULL, &tok), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_sample(s, &greedy, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  pipit_sampler_params badp = dflt;
  badp.temperature = -1.0f;
  EXPECT(pipit_session_sample(s, &badp, &tok), PIPIT_ERR_INVALID_ARGUMENT);
  badp = dflt;
  badp.top_p = 0.0f;
  EXPECT(pipit_session_sample(s, &badp, &tok), PIPIT_ERR_INVALID_ARGUMENT);
  badp = dflt;
  badp.min_p = NAN;
  EXPECT(pipit_session_sample(s, &badp, &tok), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_session_sample(s, &greedy, &tok));
  CHECK(tok == (int32_t)argmax(saved, nv));
  int32_t tok2 = -1;
  OK(pipit_session_sample(s, &dflt, &tok2));
  CHECK(tok2 >= 0 && tok2 < n_vocab);
  CHECK(pipit_session_n_past(s) == n_text); /* sampling does not append */

  /* Evaluating one more token moves the logits; the old pointer stays readable memory. */
  OK(pipit_session_eval(s, &tok, 1));
  CHECK(pipit_session_n_past(s) == n_text + 1);
  const float *logits2 = NULL;
  OK(pipit_session_logits(s, &logits2, &nv));
  CHECK(memcmp(logits2, saved, nv * sizeof *saved) != 0);

  /* ---- score ---- */
  pipit_session *s2 = NULL;
  OK(pipit_session_new(m, &sp, &s2));
  double lp = 1.0, lp1 = 1.0, lp2 = 1.0;
  EXPECT(pipit_session_score(NULL, toks, n_text, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_score(s2, NULL, n_text, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_score(s2, toks, n_text, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_score(s2, toks, 0, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(s2) == 0);
  OK(pipit_session_score(s2, toks, n_text, &lp));
  CHECK(isfinite(lp) && lp < 0.0);
  CHECK(pipit_session_n_past(s2) == n_text);
  /* The logits after scoring are those after evaluating the same tokens. */
  const float *slog = NULL;
  OK(pipit_session_logits(s2, &slog, &nv));
  for (size_t i = 0; i < nv; i++) CHECK(fabsf(slog[i] - saved[i]) <= 1e-3f * (1.0f + fabsf(saved[i])));
  /* Scoring in two calls gives the same total; the first token alone scores 0. */
  OK(pipit_session_reset(s2));
  CHECK(pipit_session_n_past(s2) == 0);
  EXPECT(pipit_session_logits(s2, &slog, &nv), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_session_score(s2, toks, 1, &lp1));
  CHECK(lp1 == 0.0);
  OK(pipit_session_score(s2, toks + 1, n_text - 1, &lp2));
  CHECK(fabs(lp1 + lp2 - lp) <= 1e-3 * (1.0 + fabs(lp)));
  EXPECT(pipit_session_reset(NULL), PIPIT_ERR_INVALID_ARGUMENT);

  /* ---- context full: n_past and logits unchanged ---- */
  pipit_session *full = NULL;
  pipit_session_params small = params_ctx((uint32_t)n_text + 2);
  OK(pipit_session_new(m, &small, &full));
  OK(pipit_session_eval(full, toks, n_text));
  const float *fl = NULL;
  OK(pipit_session_logits(full, &fl, &nv));
  memcpy(saved, fl, nv * sizeof *saved);
  EXPECT(pipit_session_eval(full, toks, 3), PIPIT_ERR_CONTEXT_FULL);
  CHECK(strstr(pipit_last_error(), "context full") != NULL);
  CHECK(pipit_session_n_past(full) == n_text);
  OK(pipit_session_logits(full, &fl, &nv));
  CHECK(memcmp(fl, saved, nv * sizeof *saved) == 0);
  EXPECT(pipit_session_score(full, toks, 3, &lp), PIPIT_ERR_CONTEXT_FULL);
  CHECK(pipit_session_n_past(full) == n_text);
  OK(pipit_session_logits(full, &fl, &nv));
  CHECK(memcmp(fl, saved, nv * sizeof *saved) == 0);
  EXPECT(pipit_generate(full, text, text_len, &greedy, 4, NULL, NULL), PIPIT_ERR_CONTEXT_FULL);
  CHECK(pipit_session_n_past(full) == n_text);
  int32_t reason = -1;
  OK(pipit_session_stop_reason(full, &reason));
  CHECK(reason == PIPIT_STOP_NONE); /* the failed call reports no reason */
  /* Generation streams what fits (2 tokens), then ends cleanly: the context is full. */
  text_buf *out = malloc(sizeof *out);
  reset_buf(out, n_vocab, 0);
  OK(pipit_generate(full, NULL, 0, &greedy, 100, collect, out));
  CHECK(!out->bad_token);
  OK(pipit_session_stop_reason(full, &reason));
  if (reason == PIPIT_STOP_CONTEXT_FULL) {
    CHECK(pipit_session_n_past(full) == n_text + 2);
  } else {
    CHECK(reason == PIPIT_STOP_END_OF_TEXT); /* the model ended its text first */
    CHECK(pipit_session_n_past(full) < n_text + 2);
  }
  /* A full context: generating more ends at once, still PIPIT_OK, nothing changed. */
  if (reason == PIPIT_STOP_CONTEXT_FULL) {
    OK(pipit_generate(full, NULL, 0, &greedy, 100, collect, out));
    OK(pipit_session_stop_reason(full, &reason));
    CHECK(reason == PIPIT_STOP_CONTEXT_FULL && pipit_session_n_past(full) == n_text + 2);
  }
  EXPECT(pipit_session_stop_reason(NULL, &reason), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_stop_reason(full, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  pipit_session_free(full);

  /* ---- generate ---- */
  OK(pipit_session_reset(s));
  reset_buf(out, n_vocab, 0);
  EXPECT(pipit_generate(NULL, text, text_len, &greedy, 8, collect, out), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_generate(s, text, text_len, NULL, 8, collect, out), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_generate(s, NULL, 5, &greedy, 8, collect, out), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_generate(s, "\xc3", 1, &greedy, 8, collect, out), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_generate(s, text, text_len, &badp, 8, collect, out), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(s) == 0 && out->calls == 0);

  OK(pipit_generate(s, text, text_len, &greedy, 8, collect, out));
  CHECK(!out->bad_token && out->calls <= 8);
  const uint32_t past_after_first = pipit_session_n_past(s);
  CHECK(past_after_first >= n_text && past_after_first <= n_text + 1 + 8);
  char first_text[1 << 16];
  size_t first_len = out->len;
  memcpy(first_text, out->data, first_len);

  /* The same call on a reset session gives the same text. */
  OK(pipit_session_reset(s));
  reset_buf(out, n_vocab, 0);
  OK(pipit_generate(s, text, text_len, &greedy, 8, collect, out));
  CHECK(out->len == first_len && memcmp(out->data, first_text, first_len) == 0);
  CHECK(pipit_session_n_past(s) == past_after_first);

  /* Max tokens 0 evaluates the prompt only; a NULL callback is allowed. */
  OK(pipit_session_reset(s));
  OK(pipit_generate(s, text, text_len, &greedy, 0, NULL, NULL));
  CHECK(pipit_session_n_past(s) >= n_text);
  OK(pipit_generate(s, NULL, 0, &greedy, 3, NULL, NULL));
  CHECK(pipit_session_n_past(s) <= n_text + 1 + 3);

  /* A nonzero callback return ends the generation with PIPIT_OK after that piece. */
  OK(pipit_session_reset(s));
  reset_buf(out, n_vocab, 1);
  OK(pipit_generate(s, text, text_len, &greedy, 8, collect, out));
  CHECK(out->calls <= 1);
  if (out->calls == 1) CHECK(out->len <= first_len && memcmp(out->data, first_text, out->len) == 0);

  /* Sampled generation with one seed is reproducible. */
  char sampled[2][1 << 12];
  size_t sampled_len[2];
  for (int r = 0; r < 2; r++) {
    OK(pipit_session_reset(s));
    reset_buf(out, n_vocab, 0);
    pipit_sampler_params p = dflt;
    p.seed = 1234;
    p.temperature = 1.0f;
    OK(pipit_generate(s, text, text_len, &p, 8, collect, out));
    sampled_len[r] = out->len < sizeof sampled[r] ? out->len : sizeof sampled[r];
    memcpy(sampled[r], out->data, sampled_len[r]);
  }
  CHECK(sampled_len[0] == sampled_len[1] && memcmp(sampled[0], sampled[1], sampled_len[0]) == 0);

  state_functions(m, sp, &greedy, toks, n_text, text, text_len);

  /* ---- cancel with nothing running is a no-op ---- */
  EXPECT(pipit_session_cancel(NULL), PIPIT_ERR_INVALID_ARGUMENT);
  OK(pipit_session_cancel(s));
  OK(pipit_session_reset(s));
  OK(pipit_session_eval(s, toks, n_text));

  /* ---- a session keeps its model alive ---- */
  const char *p0 = NULL;
  size_t p0_len = 0;
  OK(pipit_token_to_piece(m, toks[0], &p0, &p0_len));
  char p0_copy[256];
  CHECK(p0_len < sizeof p0_copy);
  memcpy(p0_copy, p0, p0_len);
  pipit_model_free(m);
  m = NULL;
  CHECK(memcmp(p0, p0_copy, p0_len) == 0); /* pieces live while the model does (held by s) */
  OK(pipit_session_reset(s));
  reset_buf(out, n_vocab, 0);
  OK(pipit_generate(s, text, text_len, &greedy, 8, collect, out));
  CHECK(out->len == first_len && memcmp(out->data, first_text, first_len) == 0);

  pipit_session_free(s);
  pipit_session_free(s2);
  free(out);
  free(saved);
  free(toks);
  printf("api: all checks passed (%s, n_vocab %d, %d tokens of text)\n", info.name, n_vocab, (int)n_text);
  return 0;
}
