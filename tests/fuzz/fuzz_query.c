/*
 * fuzz_query.c — keytrusteed's query-string parser (app/keytrusteed/query.c, ktd_query_parse),
 * which reads the part of the request target after '?' for GET /v1/deposits and the fingerprint
 * endpoint.
 *
 * Input: the query string (up to a NUL). It is parsed against the keys of each endpoint (none;
 * "a"; "handle" and "search"). Properties: on success every value is a NUL-free string no longer
 * than the query, each key came from the list, and a value holds no byte the query could not
 * have produced; on failure every value is NULL and the error is a sentence.
 */
#include <stdlib.h>
#include <string.h>

#include "app/keytrusteed/keytrusteed.h"
#include "tests/fuzz/fuzz.h"

static void parse_against(const char *query, const char *const *keys, size_t count)
{
    char *values[2] = {(char *)"junk", (char *)"junk"};
    char error[160] = "";
    if (ktd_query_parse(query, keys, count, count > 0 ? values : NULL, error, sizeof error) == 0) {
        for (size_t index = 0; index < count; index++)
            FUZZ_CHECK(values[index] == NULL || strlen(values[index]) <= strlen(query),
                       "a value longer than the query");
        ktd_query_free(count > 0 ? values : NULL, count);
    } else {
        FUZZ_CHECK(error[0] != '\0', "a refusal without a reason");
    }
    for (size_t index = 0; index < count; index++)
        FUZZ_CHECK(values[index] == NULL, "a value left after free or failure");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_query");
    fuzz_reader reader = {data, size};
    char *query = fuzz_take_string(&reader, 0);
    static const char *const fingerprint_keys[] = {"a"};
    static const char *const deposit_keys[] = {"handle", "search"};
    parse_against(query, NULL, 0);
    parse_against(query, fingerprint_keys, 1);
    parse_against(query, deposit_keys, 2);
    free(query);
    return 0;
}
