/* Beam search from C: pipit_session_new_ex, pipit_beam_search with NULLs and bad counts, one
 * beam equal to greedy pipit_generate, the BUSY contract while a search runs, and a cancel
 * during a search that leaves the session as it was. Usage: beam MODEL PROMPT N_TOKENS */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

static pipit_model *g_model;

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

static pipit_session *new_session(uint32_t n_seq_max) {
  pipit_session_params sp;
  pipit_session_params_default(&sp);
  sp.n_ctx = 512;
  sp.n_threads = 1;
  pipit_session *s = NULL;
  OK(pipit_session_new_ex(g_model, &sp, n_seq_max, &s));
  CHECK(s != NULL);
  return s;
}

typedef struct {
  pipit_session *s;
  const char *prompt;
  uint32_t beams, n;
  atomic_int started;
  atomic_int done;
  pipit_status status;
} search_state;

static void *run_search(void *arg) {
  search_state *b = arg;
  const char *out = NULL;
  size_t len = 0;
  double lp = 0;
  atomic_store(&b->started, 1);
  b->status = pipit_beam_search(b->s, b->prompt, strlen(b->prompt), b->beams, 1.0f, b->n, &out, &len, &lp);
  atomic_store(&b->done, 1);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL PROMPT N_TOKENS\n", argv[0]);
    return 2;
  }
  const char *prompt = argv[2];
  uint32_t n = (uint32_t)strtoul(argv[3], NULL, 10);
  OK(pipit_model_open(argv[1], &g_model));
  pipit_session_params sp;
  pipit_session_params_default(&sp);

  /* NULLs and counts out of range. */
  pipit_session *s = (pipit_session *)1;
  EXPECT(pipit_session_new_ex(NULL, &sp, 4, &s), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(s == NULL);
  EXPECT(pipit_session_new_ex(g_model, NULL, 4, &s), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_new_ex(g_model, &sp, 4, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_new_ex(g_model, &sp, 0, &s), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_session_new_ex(g_model, &sp, 100000, &s), PIPIT_ERR_INVALID_ARGUMENT);
  s = new_session(4);
  const char *out = "x";
  size_t len = 7;
  double lp = 1;
  EXPECT(pipit_beam_search(NULL, prompt, strlen(prompt), 2, 1.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(out == NULL && len == 0 && lp == 0);
  EXPECT(pipit_beam_search(s, NULL, 3, 2, 1.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, prompt, strlen(prompt), 2, 1.0f, n, NULL, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, prompt, strlen(prompt), 2, 1.0f, n, &out, NULL, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, prompt, strlen(prompt), 2, 1.0f, n, &out, &len, NULL), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, prompt, strlen(prompt), 5, 1.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, prompt, strlen(prompt), 0, 1.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, prompt, strlen(prompt), 2, 1.0f / 0.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, "", 0, 2, 1.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  EXPECT(pipit_beam_search(s, "\xff", 1, 2, 1.0f, n, &out, &len, &lp), PIPIT_ERR_INVALID_ARGUMENT);
  CHECK(pipit_session_n_past(s) == 0);

  /* One beam is greedy: the same text as pipit_generate at temperature 0. */
  pipit_sampler_params greedy;
  pipit_sampler_params_default(&greedy);
  greedy.temperature = 0.0f;
  pipit_session *g = new_session(1);
  static text want;
  OK(pipit_generate(g, prompt, strlen(prompt), &greedy, n, append, &want));
  OK(pipit_beam_search(s, prompt, strlen(prompt), 1, 1.0f, n, &out, &len, &lp));
  CHECK(len == want.len && memcmp(out, want.data, len) == 0);
  CHECK(out[len] == '\0');
  CHECK(lp < 0);
  CHECK(pipit_session_n_past(s) == pipit_session_n_past(g));

  /* Four beams from the same context: at least as probable as greedy's (scored the same way). */
  uint32_t n_past = pipit_session_n_past(s);
  OK(pipit_session_reset(s));
  double lp4 = 0;
  OK(pipit_beam_search(s, prompt, strlen(prompt), 4, 0.0f, n, &out, &len, &lp4));
  CHECK(len > 0);
  CHECK(pipit_session_n_past(s) > 0);
  printf("1 beam: logprob %.4f; 4 beams: %.4f, %zu bytes: %.*s\n", lp, lp4, len, (int)len, out);

  /* A search running on another thread: a second call is BUSY; a cancel stops it and the
     session is as before (same n_past, same logits). */
  OK(pipit_session_reset(s));
  OK(pipit_session_eval(s, (const int32_t[]){1, 2, 3}, 3));
  n_past = pipit_session_n_past(s);
  const float *logits = NULL;
  size_t n_vocab = 0;
  OK(pipit_session_logits(s, &logits, &n_vocab));
  float *before = malloc(n_vocab * sizeof *before);
  CHECK(before != NULL);
  memcpy(before, logits, n_vocab * sizeof *before);
  search_state st = {.s = s, .prompt = prompt, .beams = 4, .n = 2000};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, run_search, &st) == 0);
  while (!atomic_load(&st.started)) sched_yield();
  int saw_busy = 0;
  for (int i = 0; i < 100000 && !atomic_load(&st.done); i++) {
    /* Evaluating no tokens changes nothing: INVALID_ARGUMENT when idle, BUSY while busy. */
    pipit_status bs = pipit_session_eval(s, (const int32_t[]){1}, 0);
    if (bs == PIPIT_ERR_BUSY) {
      saw_busy = 1;
      break;
    }
    sched_yield();
  }
  OK(pipit_session_cancel(s));
  CHECK(pthread_join(th, NULL) == 0);
  CHECK(saw_busy);
  EXPECT(st.status, PIPIT_ERR_CANCELLED);
  CHECK(pipit_session_n_past(s) == n_past);
  OK(pipit_session_logits(s, &logits, &n_vocab));
  CHECK(memcmp(before, logits, n_vocab * sizeof *before) == 0);
  free(before);

  pipit_session_free(g);
  pipit_session_free(s);
  pipit_model_free(g_model);
  printf("all checks passed\n");
  return 0;
}
