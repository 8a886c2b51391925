/* Threads: sessions on one shared model in parallel, a busy session, and cancel from
 * another thread. Usage: threads MODEL PROMPT N_TOKENS
 * PROMPT should make the model write at least N_TOKENS tokens of text greedily. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define N_THREADS 4

static const char *g_prompt;
static uint32_t g_n_tokens;
static pipit_model *g_model;
static pipit_sampler_params g_greedy;

typedef struct {
  char data[1 << 15];
  size_t len;
} text;

static int append(const char *piece, size_t len, int32_t token, void *user) {
  (void)token;
  text *t = user;
  if (t->len + len < sizeof t->data) {
    memcpy(t->data + t->len, piece, len);
    t->len += len;
  }
  return 0;
}

static pipit_session *new_session(uint32_t n_ctx) {
  pipit_session_params sp;
  pipit_session_params_default(&sp);
  sp.n_ctx = n_ctx;
  sp.n_threads = 1;
  pipit_session *s = NULL;
  OK(pipit_session_new(g_model, &sp, &s));
  return s;
}

/* Greedy text of the prompt in a fresh session; the tokenizer is used from this thread too. */
static void *greedy_text(void *arg) {
  text *out = arg;
  size_t n = 0;
  EXPECT(pipit_tokenize(g_model, g_prompt, strlen(g_prompt), 1, NULL, 0, &n), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(n > 0);
  pipit_session *s = new_session(512);
  OK(pipit_generate(s, g_prompt, strlen(g_prompt), &g_greedy, g_n_tokens, append, out));
  pipit_session_free(s);
  return NULL;
}

/* ---- a busy session and a cancel that arrives while a piece is being delivered ---- */

typedef struct {
  pipit_session *s;
  atomic_int calls;
  atomic_int parked;  /* the callback waits inside its 2nd call */
  atomic_int release; /* the main thread lets it go on */
  atomic_int done;
  pipit_status status;
} busy_state;

static int park_on_second(const char *piece, size_t len, int32_t token, void *user) {
  (void)piece, (void)len, (void)token;
  busy_state *b = user;
  if (atomic_fetch_add(&b->calls, 1) + 1 == 2) {
    atomic_store(&b->parked, 1);
    while (!atomic_load(&b->release)) sched_yield();
  }
  return 0;
}

static void *run_busy(void *arg) {
  busy_state *b = arg;
  b->status = pipit_generate(b->s, g_prompt, strlen(g_prompt), &g_greedy, 1000, park_on_second, b);
  atomic_store(&b->done, 1);
  return NULL;
}

/* ---- a cancel from another thread at an arbitrary moment ---- */

typedef struct {
  pipit_session *s;
  atomic_int calls;
  atomic_int done;
  pipit_status status;
} free_state;

static int count(const char *piece, size_t len, int32_t token, void *user) {
  (void)piece, (void)len, (void)token;
  atomic_fetch_add(&((free_state *)user)->calls, 1);
  return 0;
}

static void *run_free(void *arg) {
  free_state *f = arg;
  f->status = pipit_generate(f->s, g_prompt, strlen(g_prompt), &g_greedy, 1000, count, f);
  atomic_store(&f->done, 1);
  return NULL;
}

/* ---- a cancel during pipit_choose ---- */

#define N_OPTIONS 48

typedef struct {
  pipit_session *s;
  atomic_int done;
  pipit_status status;
} choose_state;

static void *run_choose(void *arg) {
  choose_state *c = arg;
  static const char *options[N_OPTIONS];
  static double lps[N_OPTIONS];
  for (int i = 0; i < N_OPTIONS; i++)
    options[i] = (i % 2) ? " a robot who paints the sky in every color it knows" : " once upon a time";
  size_t best = 0;
  atomic_store(&c->done, 0);
  c->status = pipit_choose(c->s, g_prompt, strlen(g_prompt), options, N_OPTIONS, lps, &best);
  atomic_store(&c->done, 1);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL PROMPT N_TOKENS\n", argv[0]);
    return 2;
  }
  g_prompt = argv[2];
  g_n_tokens = (uint32_t)strtoul(argv[3], NULL, 10);
  pipit_sampler_params_default(&g_greedy);
  g_greedy.temperature = 0.0f;
  OK(pipit_model_open(argv[1], &g_model));

  /* Single-threaded reference, then 4 threads, each with its own session, at once. */
  static text ref, out[N_THREADS];
  greedy_text(&ref);
  CHECK(ref.len > 0);
  pthread_t th[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) CHECK(pthread_create(&th[i], NULL, greedy_text, &out[i]) == 0);
  for (int i = 0; i < N_THREADS; i++) CHECK(pthread_join(th[i], NULL) == 0);
  for (int i = 0; i < N_THREADS; i++) {
    if (out[i].len != ref.len || memcmp(out[i].data, ref.data, ref.len) != 0) {
      fprintf(stderr, "thread %d wrote\n%.*s\ninstead of\n%.*s\n", i, (int)out[i].len, out[i].data,
              (int)ref.len, ref.data);
      return 1;
    }
  }

  /* Busy: while one thread is inside pipit_generate, every call from another thread on the
   * same session fails with PIPIT_ERR_BUSY and changes nothing; cancel goes through. */
  busy_state *b = calloc(1, sizeof *b);
  b->s = new_session(512);
  pthread_t bt;
  CHECK(pthread_create(&bt, NULL, run_busy, b) == 0);
  while (!atomic_load(&b->parked) && !atomic_load(&b->done)) sched_yield();
  CHECK(atomic_load(&b->parked)); /* else the text ended before its 2nd piece */
  int32_t tok = 0;
  const float *logits = NULL;
  size_t nv = 0;
  double lp = 0.0;
  EXPECT(pipit_session_eval(b->s, &tok, 1), PIPIT_ERR_BUSY);
  CHECK(strstr(pipit_last_error(), "in use") != NULL);
  EXPECT(pipit_session_logits(b->s, &logits, &nv), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_sample(b->s, &g_greedy, &tok), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_score(b->s, &tok, 1, &lp), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_reset(b->s), PIPIT_ERR_BUSY);
  EXPECT(pipit_generate(b->s, "x", 1, &g_greedy, 1, NULL, NULL), PIPIT_ERR_BUSY);
  const char *one[1] = {"x"};
  int32_t reason = -1;
  size_t needed = 0, best = 7;
  EXPECT(pipit_session_set_stop(b->s, one, 1), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_stop_reason(b->s, &reason), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_truncate(b->s, 0), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_save(b->s, NULL, 0, &needed), PIPIT_ERR_BUSY);
  EXPECT(pipit_session_load(b->s, "x", 1), PIPIT_ERR_BUSY);
  EXPECT(pipit_choose(b->s, "x", 1, one, 1, &lp, &best), PIPIT_ERR_BUSY);
  CHECK(reason == -1 && needed == 0 && best == 7);
  CHECK(pipit_session_n_past(b->s) == 0); /* as of the last finished call; does not block */
  OK(pipit_session_cancel(b->s));
  atomic_store(&b->release, 1);
  CHECK(pthread_join(bt, NULL) == 0);
  EXPECT(b->status, PIPIT_ERR_CANCELLED);
  /* The cancel came during the 2nd piece: no token was generated after it. */
  CHECK(atomic_load(&b->calls) == 2);
  const uint32_t past = pipit_session_n_past(b->s);
  /* The generated tokens stay in the context, and the session works on. */
  size_t n_prompt = 0;
  EXPECT(pipit_tokenize(g_model, g_prompt, strlen(g_prompt), 0, NULL, 0, &n_prompt), PIPIT_ERR_BUFFER_TOO_SMALL);
  CHECK(past >= n_prompt + 2 && past <= n_prompt + 1 + 2);
  OK(pipit_session_logits(b->s, &logits, &nv));
  OK(pipit_session_reset(b->s));
  static text again;
  OK(pipit_generate(b->s, g_prompt, strlen(g_prompt), &g_greedy, g_n_tokens, append, &again));
  CHECK(again.len == ref.len && memcmp(again.data, ref.data, ref.len) == 0);
  pipit_session_free(b->s);
  free(b);

  /* Cancel at an arbitrary moment: at most one more token after the request. */
  free_state *f = calloc(1, sizeof *f);
  f->s = new_session(512);
  pthread_t ft;
  CHECK(pthread_create(&ft, NULL, run_free, f) == 0);
  while (atomic_load(&f->calls) < 3 && !atomic_load(&f->done)) sched_yield();
  CHECK(!atomic_load(&f->done)); /* else the text ended before the cancel */
  int at_cancel = atomic_load(&f->calls);
  OK(pipit_session_cancel(f->s));
  CHECK(pthread_join(ft, NULL) == 0);
  EXPECT(f->status, PIPIT_ERR_CANCELLED);
  int after = atomic_load(&f->calls);
  if (after > at_cancel + 1) {
    fprintf(stderr, "cancel requested after %d pieces, generation went on to %d\n", at_cancel, after);
    return 1;
  }
  pipit_session_free(f->s);
  free(f);

  /* Cancel during pipit_choose: it fails with PIPIT_ERR_CANCELLED and changes nothing. */
  choose_state *c = calloc(1, sizeof *c);
  c->s = new_session(512);
  pthread_t ct;
  CHECK(pthread_create(&ct, NULL, run_choose, c) == 0);
  while (!atomic_load(&c->done)) OK(pipit_session_cancel(c->s));
  CHECK(pthread_join(ct, NULL) == 0);
  EXPECT(c->status, PIPIT_ERR_CANCELLED);
  CHECK(pipit_session_n_past(c->s) == 0);
  EXPECT(pipit_session_logits(c->s, &logits, &nv), PIPIT_ERR_INVALID_ARGUMENT);
  /* The same call without a cancel succeeds and keeps the prompt. */
  run_choose(c);
  OK(c->status);
  CHECK(pipit_session_n_past(c->s) == n_prompt + 1 || pipit_session_n_past(c->s) == n_prompt);
  pipit_session_free(c->s);
  free(c);

  pipit_model_free(g_model);
  printf("threads: all checks passed (%d threads agree on %zu bytes)\n", N_THREADS, ref.len);
  return 0;
}
