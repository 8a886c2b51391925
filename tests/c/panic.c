/* A panic inside an exported function comes back as PIPIT_ERR_INTERNAL and the process
 * lives on (library built with the `ffi-test-panic` feature). Usage: panic MODEL */
#include <string.h>

#include "check.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL\n", argv[0]);
    return 2;
  }
  pipit_model *m = NULL;
  OK(pipit_model_open(argv[1], &m));
  const char *trigger = "pipit:test-panic";
  size_t n = 0;
  EXPECT(pipit_tokenize(m, trigger, strlen(trigger), 0, NULL, 0, &n), PIPIT_ERR_INTERNAL);
  CHECK(strstr(pipit_last_error(), "panic") != NULL);
  CHECK(strstr(pipit_last_error(), "ffi-test-panic") != NULL);
  /* Twice: the library is still in working order. */
  EXPECT(pipit_tokenize(m, trigger, strlen(trigger), 0, NULL, 0, &n), PIPIT_ERR_INTERNAL);
  pipit_model_info info;
  OK(pipit_model_get_info(m, &info));
  pipit_session_params sp;
  pipit_session_params_default(&sp);
  sp.n_ctx = info.n_ctx_train < 64 ? info.n_ctx_train : 64;
  pipit_session *s = NULL;
  OK(pipit_session_new(m, &sp, &s));
  OK(pipit_tokenize(m, "", 0, 0, NULL, 0, &n));
  pipit_sampler_params greedy;
  pipit_sampler_params_default(&greedy);
  greedy.temperature = 0.0f;
  int32_t tok = info.bos_token >= 0 ? info.bos_token : 0;
  OK(pipit_session_eval(s, &tok, 1));
  OK(pipit_generate(s, NULL, 0, &greedy, 2, NULL, NULL));
  pipit_session_free(s);
  pipit_model_free(m);
  printf("panic: PIPIT_ERR_INTERNAL and the process lives\n");
  return 0;
}
