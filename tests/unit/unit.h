/*
 * unit.h — the smallest test harness that does the job: no framework, no allocation.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_EQ_INT(a, b); ... }
 *   int main(void) { return unit_run(); }   // runs every TEST in file order
 *
 * A failing CHECK prints file:line and the expression and lets the test go on, so one run shows
 * every failure. Each test prints "ok N - name" or "not ok N - name"; the run ends with the line
 * "N passed, M failed" that tests/run.sh sums, and exits 1 when anything failed.
 */
#ifndef KT_TESTS_UNIT_H
#define KT_TESTS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*unit_function)(void);
struct unit_case {
    const char *name;
    unit_function function;
};

#define UNIT_MAX_CASES 256
static struct unit_case unit_cases[UNIT_MAX_CASES];
static int unit_case_count;
static int unit_current_failures;

#define TEST(case_name)                                                                           \
    static void test_##case_name(void);                                                           \
    __attribute__((constructor)) static void unit_register_##case_name(void)                      \
    {                                                                                             \
        if (unit_case_count < UNIT_MAX_CASES) {                                                   \
            unit_cases[unit_case_count].name = #case_name;                                        \
            unit_cases[unit_case_count].function = test_##case_name;                              \
            unit_case_count++;                                                                    \
        }                                                                                         \
    }                                                                                             \
    static void test_##case_name(void)

#define CHECK(condition)                                                                          \
    do {                                                                                          \
        if (!(condition)) {                                                                       \
            fprintf(stderr, "    %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition);    \
            unit_current_failures++;                                                              \
        }                                                                                         \
    } while (0)

#define CHECK_EQ_INT(actual, expected)                                                            \
    do {                                                                                          \
        long long unit_a = (long long)(actual), unit_e = (long long)(expected);                  \
        if (unit_a != unit_e) {                                                                   \
            fprintf(stderr, "    %s:%d: %s is %lld, expected %lld\n", __FILE__, __LINE__,        \
                    #actual, unit_a, unit_e);                                                     \
            unit_current_failures++;                                                              \
        }                                                                                         \
    } while (0)

#define CHECK_EQ_STR(actual, expected)                                                            \
    do {                                                                                          \
        const char *unit_a = (actual), *unit_e = (expected);                                     \
        if (unit_a == NULL || unit_e == NULL || strcmp(unit_a, unit_e) != 0) {                    \
            fprintf(stderr, "    %s:%d: %s is \"%s\", expected \"%s\"\n", __FILE__, __LINE__,    \
                    #actual, unit_a ? unit_a : "(null)", unit_e ? unit_e : "(null)");            \
            unit_current_failures++;                                                              \
        }                                                                                         \
    } while (0)

/* Stops the current test when a precondition for the rest of it fails. */
#define REQUIRE(condition)                                                                        \
    do {                                                                                          \
        if (!(condition)) {                                                                       \
            fprintf(stderr, "    %s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #condition);  \
            unit_current_failures++;                                                              \
            return;                                                                               \
        }                                                                                         \
    } while (0)

static inline int unit_run(void)
{
    int passed = 0, failed = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < unit_case_count; i++) {
        unit_current_failures = 0;
        unit_cases[i].function();
        if (unit_current_failures == 0) {
            passed++;
            printf("ok %d - %s\n", i + 1, unit_cases[i].name);
        } else {
            failed++;
            printf("not ok %d - %s\n", i + 1, unit_cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif /* KT_TESTS_UNIT_H */
