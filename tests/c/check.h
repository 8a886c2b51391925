/* Assertions for the C test programs: print where and why, then exit 1. */
#ifndef PIPIT_TEST_CHECK_H
#define PIPIT_TEST_CHECK_H
#include <stdio.h>
#include <stdlib.h>

#include "pipit.h"

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__,  \
              #cond, pipit_last_error());                                                \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

#define EXPECT(call, want)                                                               \
  do {                                                                                   \
    pipit_status st_ = (call);                                                           \
    if (st_ != (want)) {                                                                 \
      fprintf(stderr, "%s:%d: %s returned %d (%s), want %d (%s); last error: %s\n",     \
              __FILE__, __LINE__, #call, (int)st_, pipit_status_string(st_), (int)(want), \
              pipit_status_string(want), pipit_last_error());                            \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

#define OK(call) EXPECT(call, PIPIT_OK)

#endif
