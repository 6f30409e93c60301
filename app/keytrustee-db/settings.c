/*
 * settings.c — db/keytrustee-db.conf, written by `ktadmin db --bootstrap` (and later by
 * init-slave and enable-synchronous-replication), read once at start into kt_db_settings.
 *
 * The values are checked here so that a typo stops the service with the file and line named
 * rather than surfacing later as a strange replication failure.
 */
#include <stdio.h>
#include <string.h>

#include "app/keytrustee-db/service.h"

const char *kt_db_role_name(kt_db_role role)
{
    switch (role) {
    case KT_ROLE_ACTIVE: return "active";
    case KT_ROLE_PASSIVE: return "passive";
    case KT_ROLE_STANDALONE: break;
    }
    return "standalone";
}

static int parse_role(const kt_config *config, const char *path, kt_db_role *role, char *error,
                      size_t error_size)
{
    const char *text = kt_config_get(config, "role", "standalone");
    if (strcmp(text, "standalone") == 0)
        *role = KT_ROLE_STANDALONE;
    else if (strcmp(text, "active") == 0)
        *role = KT_ROLE_ACTIVE;
    else if (strcmp(text, "passive") == 0)
        *role = KT_ROLE_PASSIVE;
    else {
        snprintf(error, error_size, "%s: role = \"%.40s\" must be standalone, active or passive",
                 path, text);
        return -1;
    }
    return 0;
}

static int parse_yes_no(const kt_config *config, const char *path, const char *key,
                        bool fallback, bool *value, char *error, size_t error_size)
{
    const char *text = kt_config_get(config, key, fallback ? "yes" : "no");
    if (strcmp(text, "yes") == 0)
        *value = true;
    else if (strcmp(text, "no") == 0)
        *value = false;
    else {
        snprintf(error, error_size, "%s: %s = \"%.40s\" must be yes or no", path, key, text);
        return -1;
    }
    return 0;
}

/* Copies a text setting into a fixed buffer, refusing one that does not fit. */
static int copy_text(const kt_config *config, const char *path, const char *key,
                     const char *fallback, char *out, size_t out_size, char *error,
                     size_t error_size)
{
    const char *text = kt_config_get(config, key, fallback);
    if (strlen(text) >= out_size) {
        snprintf(error, error_size, "%s: %s is longer than %zu characters", path, key,
                 out_size - 1);
        return -1;
    }
    memcpy(out, text, strlen(text) + 1);
    return 0;
}

static int parse_settings(const kt_config *config, const char *path, kt_db_settings *settings,
                          char *error, size_t error_size)
{
    if (parse_role(config, path, &settings->role, error, error_size) != 0 ||
        parse_yes_no(config, path, "synchronous", false, &settings->synchronous, error,
                     error_size) != 0 ||
        kt_config_get_long(config, "replication_port", KT_DEFAULT_REPLICATION_PORT, 1, 65535,
                           &settings->replication_port, error, error_size) != 0 ||
        kt_config_get_long(config, "master_port", KT_DEFAULT_REPLICATION_PORT, 1, 65535,
                           &settings->master_port, error, error_size) != 0 ||
        kt_config_get_long(config, "former_active_port", KT_DEFAULT_REPLICATION_PORT, 1, 65535,
                           &settings->former_active_port, error, error_size) != 0)
        return -1;
    if (copy_text(config, path, "replication_listen", "0.0.0.0", settings->replication_listen,
                  sizeof settings->replication_listen, error, error_size) != 0 ||
        copy_text(config, path, "slave", "", settings->slave, sizeof settings->slave, error,
                  error_size) != 0 ||
        copy_text(config, path, "master", "", settings->master, sizeof settings->master, error,
                  error_size) != 0 ||
        copy_text(config, path, "active_url", "", settings->active_url,
                  sizeof settings->active_url, error, error_size) != 0 ||
        copy_text(config, path, "former_active", "", settings->former_active,
                  sizeof settings->former_active, error, error_size) != 0)
        return -1;
    return 0;
}

int kt_db_settings_load(const char *path, kt_db_settings *settings, char *error,
                        size_t error_size)
{
    memset(settings, 0, sizeof *settings);
    kt_config *config = NULL;
    if (kt_config_load(path, false, &config, error, error_size) != 0)
        return -1;
    int result = parse_settings(config, path, settings, error, error_size);
    kt_config_free(config);
    return result;
}
