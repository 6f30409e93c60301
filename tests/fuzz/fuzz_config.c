/*
 * fuzz_config.c — keytrustee.conf and keytrustee-db.conf (app/common/config.c, and the value
 * checks of app/keytrustee-db/settings.c).
 *
 * The input is the file. kt_config_load parses it; every key the programs read is then fetched
 * as text and as a number; kt_db_settings_load reads it as keytrustee-db.conf. When the file is
 * accepted, the round trip must hold: saving it and loading the saved file gives a config that
 * saves to exactly the same bytes, and each value reads back unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/common/app.h"
#include "app/keytrustee-db/service.h"
#include "tests/fuzz/fuzz.h"

static const char *const keys[] = {
    "external_address", "listen", "port", "log_level", "role", "replication_listen",
    "replication_port", "slave", "master", "master_port", "synchronous", "active_url",
    "tls_min_version", "tls_ciphers",
};
#define KEY_COUNT (sizeof keys / sizeof keys[0])

static char *saved_text(const kt_config *config, const char *name, size_t *size)
{
    char path[4096];
    char error[512];
    snprintf(path, sizeof path, "%s/%s", fuzz_directory(), name);
    FUZZ_CHECK(kt_config_save(config, path, error, sizeof error) == 0, "save failed: %s", error);
    return fuzz_file_read(path, size);
}

static void check_round_trip(const kt_config *config)
{
    char error[512];
    size_t first_size = 0, second_size = 0;
    char *first = saved_text(config, "saved-1.conf", &first_size);
    char path[4096];
    snprintf(path, sizeof path, "%s/saved-1.conf", fuzz_directory());
    kt_config *reloaded = NULL;
    FUZZ_CHECK(kt_config_load(path, false, &reloaded, error, sizeof error) == 0,
               "a saved config does not load: %s", error);
    for (size_t index = 0; index < KEY_COUNT; index++) {
        const char *before = kt_config_get(config, keys[index], NULL);
        const char *after = kt_config_get(reloaded, keys[index], NULL);
        FUZZ_CHECK((before == NULL) == (after == NULL) &&
                       (before == NULL || strcmp(before, after) == 0),
                   "key %s changed in the round trip", keys[index]);
    }
    char *second = saved_text(reloaded, "saved-2.conf", &second_size);
    FUZZ_CHECK(first_size == second_size && memcmp(first, second, first_size) == 0,
               "save(load(save(c))) differs from save(c)");
    free(first);
    free(second);
    kt_config_free(reloaded);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_setup("fuzz_config");
    const char *path = fuzz_file_write("keytrustee.conf", data, size, 0600);
    char error[512];
    kt_config *config = NULL;
    if (kt_config_load(path, false, &config, error, sizeof error) == 0) {
        for (size_t index = 0; index < KEY_COUNT; index++) {
            long value = 0;
            (void)kt_config_get(config, keys[index], "");
            (void)kt_config_get_long(config, keys[index], 0, 1, 65535, &value, error,
                                     sizeof error);
        }
        check_round_trip(config);
        kt_config_free(config);
    }
    kt_db_settings settings;
    (void)kt_db_settings_load(path, &settings, error, sizeof error);
    return 0;
}
