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
  /* Generation streams what fits (2 tokens), then reports the full context. */
  text_buf *out = malloc(sizeof *out);
  reset_buf(out, n_vocab, 0);
  pipit_status st = pipit_generate(full, NULL, 0, &greedy, 100, collect, out);
  CHECK(!out->bad_token);
  if (st == PIPIT_ERR_CONTEXT_FULL) {
    CHECK(pipit_session_n_past(full) == n_text + 2);
  } else {
    EXPECT(st, PIPIT_OK); /* the model ended its text first */
    CHECK(pipit_session_n_past(full) < n_text + 2);
  }
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
