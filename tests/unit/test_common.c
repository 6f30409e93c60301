/*
 * test_common.c — unit tests of app/common/: config files, paths and private directories, the
 * admin-socket framing, base64 JSON fields, logging, pid files and the db client's errors.
 *
 * Everything runs in a private temporary directory that is removed at the end; sockets are
 * socketpairs, so no daemon is needed.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "app/common/app.h"
#include "crypto/crypto.h"
#include "tests/unit/unit.h"

static char scratch[PATH_MAX];

/* A fresh path inside the scratch directory. */
static const char *scratch_path(const char *name)
{
    static char path[PATH_MAX];
    if (kt_path_join(path, sizeof path, scratch, name) != 0)
        abort(); /* the scratch directory is short: this cannot happen */
    return path;
}

static int write_text(const char *path, const char *text, size_t length)
{
    FILE *stream = fopen(path, "w");
    if (stream == NULL)
        return -1;
    size_t written = fwrite(text, 1, length, stream);
    return (fclose(stream) == 0 && written == length) ? 0 : -1;
}

static bool contains(const char *text, const char *part)
{
    return text != NULL && strstr(text, part) != NULL;
}

/* ---- config ----------------------------------------------------------------------------------- */

/* ---- Operator command lines (cli.c) ------------------------------------------------------ */

static const kt_cli_program cli_program = {"kt-test", "usage: kt-test COMMAND\n",
                                           "usage: kt-test COMMAND\n"};

/* kt_cli_global_options over a NULL-terminated argument list, with getopt reset first. */
static int global_options(char **argv, const char **confdir, int *exit_code)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    optind = 0;
    *confdir = NULL;
    *exit_code = -1;
    return kt_cli_global_options(&cli_program, argc, argv, confdir, exit_code);
}

TEST(cli_global_options)
{
    const char *confdir;
    int exit_code;
    char *with_confdir[] = {"kt-test", "--confdir", "/etc/kt", "status", "--json", NULL};
    CHECK_EQ_INT(global_options(with_confdir, &confdir, &exit_code), 3);
    CHECK_EQ_STR(confdir != NULL ? confdir : "(null)", "/etc/kt");
    char *nothing[] = {"kt-test", NULL};
    CHECK_EQ_INT(global_options(nothing, &confdir, &exit_code), -1);
    CHECK_EQ_INT(exit_code, KT_CLI_EXIT_USAGE);
    char *unknown[] = {"kt-test", "--bogus", "status", NULL};
    CHECK_EQ_INT(global_options(unknown, &confdir, &exit_code), -1);
    CHECK_EQ_INT(exit_code, KT_CLI_EXIT_USAGE);
    char *missing[] = {"kt-test", "--confdir", NULL};
    CHECK_EQ_INT(global_options(missing, &confdir, &exit_code), -1);
    CHECK_EQ_INT(exit_code, KT_CLI_EXIT_USAGE);
    char *help[] = {"kt-test", "--help", "status", NULL};
    CHECK_EQ_INT(global_options(help, &confdir, &exit_code), -1);
    CHECK_EQ_INT(exit_code, KT_CLI_EXIT_OK);
}

TEST(cli_no_operands)
{
    char *clean[] = {"status", NULL};
    optind = 1;
    CHECK_EQ_INT(kt_cli_no_operands("kt-test", "status", "usage: kt-test status\n", 1, clean),
                 KT_CLI_PARSE_OK);
    char *extra[] = {"status", "extra", NULL};
    optind = 1;
    CHECK_EQ_INT(kt_cli_no_operands("kt-test", "status", "usage: kt-test status\n", 2, extra),
                 KT_CLI_PARSE_ERROR);
}

TEST(config_save_then_load_round_trip)
{
    kt_config *config = kt_config_new();
    REQUIRE(config != NULL);
    CHECK_EQ_INT(kt_config_set(config, "role", "standalone"), 0);
    CHECK_EQ_INT(kt_config_set(config, "external_address", "kt01.example.com:11371"), 0);
    CHECK_EQ_INT(kt_config_set(config, "contacts", "a b, c d"), 0);
    CHECK_EQ_INT(kt_config_set(config, "empty", ""), 0);
    CHECK_EQ_INT(kt_config_set(config, "role", "active"), 0); /* replaced in place */
    CHECK_EQ_INT(kt_config_set(config, "gone", "x"), 0);
    CHECK_EQ_INT(kt_config_set(config, "gone", NULL), 0);
    const char *path = scratch_path("round.conf");
    char error[512] = "";
    CHECK_EQ_INT(kt_config_save(config, path, error, sizeof error), 0);
    kt_config_free(config);

    char text[512] = {0};
    FILE *stream = fopen(path, "r");
    REQUIRE(stream != NULL);
    size_t length = fread(text, 1, sizeof text - 1, stream);
    fclose(stream);
    CHECK_EQ_INT(length, strlen(text));
    CHECK_EQ_STR(text, "role = active\nexternal_address = kt01.example.com:11371\n"
                       "contacts = a b, c d\nempty = \n");
    struct stat status;
    REQUIRE(stat(path, &status) == 0);
    CHECK_EQ_INT(status.st_mode & 07777, 0600);

    kt_config *loaded = NULL;
    CHECK_EQ_INT(kt_config_load(path, false, &loaded, error, sizeof error), 0);
    REQUIRE(loaded != NULL);
    CHECK_EQ_STR(kt_config_get(loaded, "role", NULL), "active");
    CHECK_EQ_STR(kt_config_get(loaded, "contacts", NULL), "a b, c d");
    CHECK_EQ_STR(kt_config_get(loaded, "empty", NULL), "");
    CHECK_EQ_STR(kt_config_get(loaded, "missing", "fallback"), "fallback");
    CHECK(kt_config_get(loaded, "gone", NULL) == NULL);
    kt_config_free(loaded);
}

TEST(config_comments_blanks_and_trimming)
{
    const char *path = scratch_path("trim.conf");
    const char text[] = "# a comment\n\n   \t\n  # indented comment\n"
                        "  port\t=   11371  \n"
                        "listen=0.0.0.0\r\n"
                        "url = https://a/b?c=d\n"
                        "last = no newline";
    REQUIRE(write_text(path, text, sizeof text - 1) == 0);
    kt_config *config = NULL;
    char error[512] = "";
    CHECK_EQ_INT(kt_config_load(path, false, &config, error, sizeof error), 0);
    REQUIRE(config != NULL);
    CHECK_EQ_STR(kt_config_get(config, "port", NULL), "11371");
    CHECK_EQ_STR(kt_config_get(config, "listen", NULL), "0.0.0.0");
    CHECK_EQ_STR(kt_config_get(config, "url", NULL), "https://a/b?c=d");
    CHECK_EQ_STR(kt_config_get(config, "last", NULL), "no newline");
    kt_config_free(config);
}

/* Loads `text` and expects an error containing `expected`. */
static void expect_config_error(const char *name, const char *text, const char *expected)
{
    const char *path = scratch_path(name);
    REQUIRE(write_text(path, text, strlen(text)) == 0);
    kt_config *config = (kt_config *)1;
    char error[512] = "";
    CHECK_EQ_INT(kt_config_load(path, false, &config, error, sizeof error), -1);
    CHECK(config == NULL);
    char where[PATH_MAX + 64];
    snprintf(where, sizeof where, "%s", expected);
    if (!contains(error, where))
        fprintf(stderr, "    error was: %s\n    expected: %s\n", error, where);
    CHECK(contains(error, where));
}

TEST(config_errors_name_file_and_line)
{
    char expected[PATH_MAX + 64];
    snprintf(expected, sizeof expected, "%s:3:", scratch_path("bad-line.conf"));
    expect_config_error("bad-line.conf", "a = 1\n# ok\nthis line has no equals\n", expected);

    snprintf(expected, sizeof expected, "%s:4: the key port is given twice (first on line 1)",
             scratch_path("twice.conf"));
    expect_config_error("twice.conf", "port = 1\nb = 2\n\nport = 3\n", expected);

    snprintf(expected, sizeof expected, "%s:2:", scratch_path("upper.conf"));
    expect_config_error("upper.conf", "a = 1\nPort = 2\n", expected);

    snprintf(expected, sizeof expected, "%s:1:", scratch_path("dash.conf"));
    expect_config_error("dash.conf", "log-level = info\n", expected);

    snprintf(expected, sizeof expected, "%s:2:", scratch_path("nokey.conf"));
    expect_config_error("nokey.conf", "a = 1\n = value\n", expected);

    snprintf(expected, sizeof expected, "%s:1:", scratch_path("space.conf"));
    expect_config_error("space.conf", "two words = x\n", expected);
}

TEST(config_nul_byte_and_long_line_refused)
{
    const char *path = scratch_path("nul.conf");
    const char text[] = "a = 1\nb = x\0y\n";
    REQUIRE(write_text(path, text, sizeof text - 1) == 0);
    kt_config *config = NULL;
    char error[512] = "";
    CHECK_EQ_INT(kt_config_load(path, false, &config, error, sizeof error), -1);
    CHECK(contains(error, ":2:"));

    char *long_text = malloc(10000);
    REQUIRE(long_text != NULL);
    memcpy(long_text, "a = ", 4);
    memset(long_text + 4, 'x', 9000);
    long_text[9004] = '\n';
    path = scratch_path("long.conf");
    int written = write_text(path, long_text, 9005);
    free(long_text);
    REQUIRE(written == 0);
    CHECK_EQ_INT(kt_config_load(path, false, &config, error, sizeof error), -1);
    CHECK(contains(error, ":1:"));
}

TEST(config_missing_file)
{
    kt_config *config = NULL;
    char error[512] = "";
    const char *path = scratch_path("does-not-exist.conf");
    CHECK_EQ_INT(kt_config_load(path, false, &config, error, sizeof error), -1);
    CHECK(contains(error, path));
    CHECK_EQ_INT(kt_config_load(path, true, &config, error, sizeof error), 0);
    REQUIRE(config != NULL);
    CHECK(kt_config_get(config, "anything", NULL) == NULL);
    kt_config_free(config);
}

TEST(config_set_refuses_what_cannot_round_trip)
{
    kt_config *config = kt_config_new();
    REQUIRE(config != NULL);
    CHECK_EQ_INT(kt_config_set(config, "Bad", "x"), -1);
    CHECK_EQ_INT(kt_config_set(config, "", "x"), -1);
    CHECK_EQ_INT(kt_config_set(config, "a-b", "x"), -1);
    CHECK_EQ_INT(kt_config_set(config, "key", "two\nlines"), -1);
    CHECK_EQ_INT(kt_config_set(config, "key", " padded"), -1);
    CHECK_EQ_INT(kt_config_set(config, "key", "padded "), -1);
    CHECK(kt_config_get(config, "key", NULL) == NULL);
    kt_config_free(config);
}

TEST(config_get_long)
{
    const char *path = scratch_path("numbers.conf");
    const char text[] = "port = 11371\nbad = 12x\nbig = 70000\nneg = -5\nplus = +5\n";
    REQUIRE(write_text(path, text, sizeof text - 1) == 0);
    kt_config *config = NULL;
    char error[512] = "";
    REQUIRE(kt_config_load(path, false, &config, error, sizeof error) == 0);
    long value = 0;
    CHECK_EQ_INT(kt_config_get_long(config, "port", 1, 1, 65535, &value, error, sizeof error), 0);
    CHECK_EQ_INT(value, 11371);
    CHECK_EQ_INT(kt_config_get_long(config, "absent", 42, 1, 65535, &value, error, sizeof error),
                 0);
    CHECK_EQ_INT(value, 42);
    CHECK_EQ_INT(kt_config_get_long(config, "neg", 0, -10, 10, &value, error, sizeof error), 0);
    CHECK_EQ_INT(value, -5);
    CHECK_EQ_INT(kt_config_get_long(config, "bad", 1, 1, 65535, &value, error, sizeof error), -1);
    char where[PATH_MAX + 32];
    snprintf(where, sizeof where, "%s:2: bad", path);
    CHECK(contains(error, where));
    CHECK_EQ_INT(kt_config_get_long(config, "big", 1, 1, 65535, &value, error, sizeof error), -1);
    CHECK(contains(error, ":3: big"));
    CHECK_EQ_INT(kt_config_get_long(config, "plus", 1, 1, 65535, &value, error, sizeof error), -1);
    kt_config_free(config);
}

/* ---- paths ------------------------------------------------------------------------------------ */

TEST(paths_from_confdir)
{
    kt_paths paths;
    char error[512] = "";
    CHECK_EQ_INT(kt_paths_resolve(&paths, "/srv/kt/.keytrustee/", NULL, error, sizeof error), 0);
    CHECK_EQ_STR(paths.home, "/srv/kt");
    CHECK_EQ_STR(paths.confdir, "/srv/kt/.keytrustee");
    CHECK_EQ_STR(paths.ssldir, "/srv/kt/.keytrustee/.ssl");
    CHECK_EQ_STR(paths.dbdir, "/srv/kt/db");
    CHECK_EQ_STR(paths.rundir, "/srv/kt/run");
    CHECK_EQ_STR(paths.logdir, "/srv/kt/logs");

    CHECK_EQ_INT(kt_paths_resolve(&paths, "/a//b/./c/../conf", "/data/db/", error, sizeof error),
                 0);
    CHECK_EQ_STR(paths.home, "/a/b");
    CHECK_EQ_STR(paths.confdir, "/a/b/conf");
    CHECK_EQ_STR(paths.dbdir, "/data/db");

    CHECK_EQ_INT(kt_paths_resolve(&paths, "/", NULL, error, sizeof error), -1);
    CHECK_EQ_INT(kt_paths_resolve(&paths, "", NULL, error, sizeof error), -1);
}

TEST(paths_relative_confdir_is_made_absolute)
{
    char working[PATH_MAX];
    REQUIRE(getcwd(working, sizeof working) != NULL);
    REQUIRE(chdir(scratch) == 0);
    kt_paths paths;
    char error[512] = "";
    int result = kt_paths_resolve(&paths, "home/.keytrustee", "db2", error, sizeof error);
    REQUIRE(chdir(working) == 0);
    CHECK_EQ_INT(result, 0);
    char expected[PATH_MAX + 32];
    snprintf(expected, sizeof expected, "%s/home", scratch);
    CHECK_EQ_STR(paths.home, expected);
    snprintf(expected, sizeof expected, "%s/db2", scratch);
    CHECK_EQ_STR(paths.dbdir, expected);
}

TEST(paths_from_environment_and_default)
{
    char *saved = getenv("KEYTRUSTEE_HOME") ? strdup(getenv("KEYTRUSTEE_HOME")) : NULL;
    kt_paths paths;
    char error[512] = "";
    REQUIRE(setenv("KEYTRUSTEE_HOME", "/opt/kt/", 1) == 0);
    CHECK_EQ_INT(kt_paths_resolve(&paths, NULL, NULL, error, sizeof error), 0);
    CHECK_EQ_STR(paths.home, "/opt/kt");
    CHECK_EQ_STR(paths.confdir, "/opt/kt/.keytrustee");
    CHECK_EQ_STR(paths.dbdir, "/opt/kt/db");
    /* --confdir wins over the environment. */
    CHECK_EQ_INT(kt_paths_resolve(&paths, "/x/.keytrustee", NULL, error, sizeof error), 0);
    CHECK_EQ_STR(paths.home, "/x");
    REQUIRE(unsetenv("KEYTRUSTEE_HOME") == 0);
    CHECK_EQ_INT(kt_paths_resolve(&paths, NULL, NULL, error, sizeof error), 0);
    CHECK_EQ_STR(paths.home, KT_DEFAULT_HOME);
    CHECK_EQ_STR(paths.rundir, KT_DEFAULT_HOME "/run");
    if (saved != NULL) {
        CHECK_EQ_INT(setenv("KEYTRUSTEE_HOME", saved, 1), 0);
        free(saved);
    }
}

TEST(path_join_refuses_overflow)
{
    char out[16];
    CHECK_EQ_INT(kt_path_join(out, sizeof out, "/a", "b"), 0);
    CHECK_EQ_STR(out, "/a/b");
    CHECK_EQ_INT(kt_path_join(out, sizeof out, "/a/long/directory", "name"), -1);
}

/* ---- private directories ---------------------------------------------------------------------- */

TEST(private_directory_created_with_0700)
{
    mode_t saved = umask(022);
    char error[512] = "";
    const char *path = scratch_path("private/nested/deeper");
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    CHECK_EQ_INT(kt_private_directory(copy, error, sizeof error), 0);
    umask(saved);
    struct stat status;
    REQUIRE(stat(copy, &status) == 0);
    CHECK(S_ISDIR(status.st_mode));
    CHECK_EQ_INT(status.st_mode & 07777, 0700);
    REQUIRE(stat(scratch_path("private"), &status) == 0);
    CHECK_EQ_INT(status.st_mode & 07777, 0700);
    /* Existing and private: fine, again. */
    CHECK_EQ_INT(kt_private_directory(copy, error, sizeof error), 0);
}

TEST(private_directory_refuses_open_modes_with_the_fix)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", scratch_path("open"));
    REQUIRE(mkdir(path, 0700) == 0);
    REQUIRE(chmod(path, 0755) == 0);
    char error[PATH_MAX + 256] = "";
    CHECK_EQ_INT(kt_private_directory(path, error, sizeof error), -1);
    char fix[PATH_MAX + 32];
    snprintf(fix, sizeof fix, "run: chmod 700 %s", path);
    CHECK(contains(error, fix));
    CHECK(contains(error, "0755"));
    REQUIRE(chmod(path, 0710) == 0);
    CHECK_EQ_INT(kt_private_directory(path, error, sizeof error), -1);
    REQUIRE(chmod(path, 0700) == 0);
    CHECK_EQ_INT(kt_private_directory(path, error, sizeof error), 0);

    snprintf(path, sizeof path, "%s", scratch_path("plain-file"));
    REQUIRE(write_text(path, "x", 1) == 0);
    CHECK_EQ_INT(kt_private_directory(path, error, sizeof error), -1);
    CHECK(contains(error, "not a directory"));
}

/* ---- wire framing ----------------------------------------------------------------------------- */

static int make_pair(int pair[2])
{
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair);
}

static void close_pair(int pair[2])
{
    if (pair[0] >= 0)
        close(pair[0]);
    if (pair[1] >= 0)
        close(pair[1]);
}

static int send_raw(int fd, const void *bytes, size_t length)
{
    return send(fd, bytes, length, MSG_NOSIGNAL) == (ssize_t)length ? 0 : -1;
}

static int send_frame(int fd, const char *body, uint32_t declared_length)
{
    unsigned char header[4] = {(unsigned char)(declared_length >> 24),
                               (unsigned char)(declared_length >> 16),
                               (unsigned char)(declared_length >> 8),
                               (unsigned char)declared_length};
    if (send_raw(fd, header, sizeof header) != 0)
        return -1;
    return body != NULL ? send_raw(fd, body, strlen(body)) : 0;
}

TEST(wire_round_trip_and_several_messages)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    char error[256] = "";
    json_t *first = json_pack("{s:s, s:i, s:{s:b}}", "op", "status", "n", 7, "inner", "x", 1);
    json_t *second = json_pack("{s:s}", "op", "org.list");
    CHECK_EQ_INT(kt_wire_send(pair[0], first, error, sizeof error), 0);
    CHECK_EQ_INT(kt_wire_send(pair[0], second, error, sizeof error), 0);
    json_t *received = NULL;
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), 0);
    CHECK(json_equal(received, first));
    json_decref(received);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), 0);
    CHECK(json_equal(received, second));
    json_decref(received);
    json_decref(first);
    json_decref(second);
    /* The other side closed between messages: ECONNRESET, a normal end. */
    close(pair[0]);
    pair[0] = -1;
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, ECONNRESET);
    CHECK(received == NULL);
    close_pair(pair);
}

typedef struct big_sender {
    int fd;
    json_t *message;
    int result;
} big_sender;

static void *send_big(void *context)
{
    big_sender *sender = context;
    char error[256];
    sender->result = kt_wire_send(sender->fd, sender->message, error, sizeof error);
    return NULL;
}

TEST(wire_large_message_needs_many_transfers)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    size_t length = KT_WIRE_MAX - 100;
    char *text = malloc(length + 1);
    REQUIRE(text != NULL);
    memset(text, 'a', length);
    text[length] = '\0';
    big_sender sender = {.fd = pair[0], .message = json_pack("{s:s}", "v", text)};
    free(text);
    REQUIRE(sender.message != NULL);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, send_big, &sender) == 0);
    json_t *received = NULL;
    char error[256] = "";
    CHECK_EQ_INT(kt_wire_receive(pair[1], 5000, &received, error, sizeof error), 0);
    pthread_join(thread, NULL);
    CHECK_EQ_INT(sender.result, 0);
    CHECK(json_equal(received, sender.message));
    json_decref(received);

    /* One byte over the limit cannot be sent. */
    char *over = malloc(KT_WIRE_MAX + 1);
    REQUIRE(over != NULL);
    memset(over, 'b', KT_WIRE_MAX);
    over[KT_WIRE_MAX] = '\0';
    json_t *too_big = json_pack("{s:s}", "v", over);
    free(over);
    CHECK_EQ_INT(kt_wire_send(pair[0], too_big, error, sizeof error), -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    json_decref(too_big);
    json_decref(sender.message);
    close_pair(pair);
}

TEST(wire_refuses_bad_lengths)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    char error[256] = "";
    json_t *received = NULL;
    REQUIRE(send_frame(pair[0], NULL, KT_WIRE_MAX + 1) == 0);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    CHECK(contains(error, "outside the limits"));
    close_pair(pair);

    REQUIRE(make_pair(pair) == 0);
    REQUIRE(send_frame(pair[0], NULL, 0xffffffffu) == 0);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    close_pair(pair);

    REQUIRE(make_pair(pair) == 0);
    REQUIRE(send_frame(pair[0], NULL, 0) == 0);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, EMSGSIZE);
    CHECK(received == NULL);
    close_pair(pair);
}

TEST(wire_truncated_message_is_an_error)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    char error[256] = "";
    json_t *received = NULL;
    REQUIRE(send_frame(pair[0], "{\"op\":", 100) == 0);
    close(pair[0]);
    pair[0] = -1;
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, EPROTO);
    CHECK(contains(error, "middle of a message"));
    close_pair(pair);

    /* Half a header. */
    REQUIRE(make_pair(pair) == 0);
    REQUIRE(send_raw(pair[0], "\0\0", 2) == 0);
    close(pair[0]);
    pair[0] = -1;
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, EPROTO);
    close_pair(pair);
}

static long elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

TEST(wire_timeout_covers_the_whole_message)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    char error[256] = "";
    json_t *received = NULL;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 200, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, ETIMEDOUT);
    long waited = elapsed_ms(&start);
    CHECK(waited >= 190 && waited < 2000);

    /* A header and part of the body, then silence: still bounded by the same timeout. */
    REQUIRE(send_frame(pair[0], "{\"a\"", 20) == 0);
    clock_gettime(CLOCK_MONOTONIC, &start);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 200, &received, error, sizeof error), -1);
    CHECK_EQ_INT(errno, ETIMEDOUT);
    waited = elapsed_ms(&start);
    CHECK(waited >= 190 && waited < 2000);
    close_pair(pair);
}

TEST(wire_refuses_what_is_not_an_object_and_stays_in_step)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    char error[256] = "";
    json_t *received = NULL;
    const char *bodies[] = {"[1,2]", "\"text\"", "{\"a\":1", "{\"a\":1,\"a\":2}", "{} junk",
                            "{\"a\":\"\\u0000\"}"};
    for (size_t index = 0; index < sizeof bodies / sizeof bodies[0]; index++) {
        REQUIRE(send_frame(pair[0], bodies[index], (uint32_t)strlen(bodies[index])) == 0);
        CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), -1);
        CHECK_EQ_INT(errno, EBADMSG);
        CHECK(received == NULL);
    }
    /* The stream is still in step: the next good message arrives intact. */
    REQUIRE(send_frame(pair[0], "{\"op\":\"status\"}", 15) == 0);
    CHECK_EQ_INT(kt_wire_receive(pair[1], 1000, &received, error, sizeof error), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(received, "op")), "status");
    json_decref(received);

    json_t *array = json_array();
    CHECK_EQ_INT(kt_wire_send(pair[0], array, error, sizeof error), -1);
    json_decref(array);
    close_pair(pair);
}

TEST(wire_send_to_a_closed_peer_fails_without_a_signal)
{
    int pair[2];
    REQUIRE(make_pair(pair) == 0);
    close(pair[1]);
    pair[1] = -1;
    json_t *message = json_pack("{s:s}", "op", "status");
    char error[256] = "";
    CHECK_EQ_INT(kt_wire_send(pair[0], message, error, sizeof error), -1); /* EPIPE, no SIGPIPE */
    CHECK_EQ_INT(errno, EPIPE);
    json_decref(message);
    close_pair(pair);
}

/* ---- base64 fields ---------------------------------------------------------------------------- */

TEST(json_base64_round_trip_and_refusals)
{
    json_t *object = json_object();
    REQUIRE(object != NULL);
    const unsigned char bytes[] = {0, 1, 2, 250, 251, 252, 253};
    CHECK_EQ_INT(kt_json_set_base64(object, "box", bytes, sizeof bytes), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(object, "box")), "AAEC+vv8/Q==");
    unsigned char out[16];
    size_t length = 0;
    CHECK_EQ_INT(kt_json_get_base64(object, "box", out, sizeof out, &length), 0);
    CHECK_EQ_INT(length, sizeof bytes);
    CHECK(memcmp(out, bytes, sizeof bytes) == 0);
    /* Too long for the buffer. */
    CHECK_EQ_INT(kt_json_get_base64(object, "box", out, 6, &length), -1);
    /* Absent, not a string, bad base64, missing padding, whitespace. */
    CHECK_EQ_INT(kt_json_get_base64(object, "absent", out, sizeof out, &length), -1);
    json_object_set_new(object, "number", json_integer(5));
    CHECK_EQ_INT(kt_json_get_base64(object, "number", out, sizeof out, &length), -1);
    json_object_set_new(object, "bad", json_string("!!!!"));
    CHECK_EQ_INT(kt_json_get_base64(object, "bad", out, sizeof out, &length), -1);
    json_object_set_new(object, "unpadded", json_string("AAEC+vv8/Q"));
    CHECK_EQ_INT(kt_json_get_base64(object, "unpadded", out, sizeof out, &length), -1);
    json_object_set_new(object, "spaced", json_string("AAEC +vv8/Q=="));
    CHECK_EQ_INT(kt_json_get_base64(object, "spaced", out, sizeof out, &length), -1);
    /* Empty is zero bytes, both ways. */
    CHECK_EQ_INT(kt_json_set_base64(object, "empty", NULL, 0), 0);
    CHECK_EQ_STR(json_string_value(json_object_get(object, "empty")), "");
    length = 99;
    CHECK_EQ_INT(kt_json_get_base64(object, "empty", out, sizeof out, &length), 0);
    CHECK_EQ_INT(length, 0);
    json_decref(object);
}

/* ---- logging ---------------------------------------------------------------------------------- */

static char *read_file(const char *path)
{
    FILE *stream = fopen(path, "r");
    if (stream == NULL)
        return NULL;
    char *text = calloc(1, 65536);
    if (text != NULL) {
        size_t length = fread(text, 1, 65535, stream);
        text[length] = '\0';
    }
    fclose(stream);
    return text;
}

TEST(log_lines_have_the_documented_shape)
{
    const char *path = scratch_path("test.log");
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", path);
    REQUIRE(kt_log_open("unit-test", KT_LOG_INFO, copy) == 0);
    kt_log(KT_LOG_DEBUG, "hidden %d", 1);
    kt_log(KT_LOG_INFO, "hello %s", "world");
    kt_log(KT_LOG_ERROR, "two\nlines");
    REQUIRE(kt_log_open("unit-test", KT_LOG_INFO, NULL) == 0); /* back to stderr */
    char *text = read_file(copy);
    REQUIRE(text != NULL);
    CHECK(!contains(text, "hidden"));
    char expected[64];
    snprintf(expected, sizeof expected, " unit-test[%ld] info: hello world\n", (long)getpid());
    CHECK(contains(text, expected));
    CHECK(contains(text, "error: two?lines\n"));
    /* 2026-11-28T12:00:00.123Z */
    CHECK(strlen(text) > 24 && text[4] == '-' && text[10] == 'T' && text[19] == '.' &&
          text[23] == 'Z' && text[24] == ' ');
    int lines = 0;
    for (const char *cursor = text; *cursor; cursor++)
        lines += *cursor == '\n';
    CHECK_EQ_INT(lines, 2);
    struct stat status;
    REQUIRE(stat(copy, &status) == 0);
    CHECK_EQ_INT(status.st_mode & 0077, 0);
    free(text);
}

TEST(log_level_parse)
{
    kt_log_level level = KT_LOG_INFO;
    CHECK_EQ_INT(kt_log_level_parse("debug", &level), 0);
    CHECK_EQ_INT(level, KT_LOG_DEBUG);
    CHECK_EQ_INT(kt_log_level_parse("WARNING", &level), 0);
    CHECK_EQ_INT(level, KT_LOG_WARNING);
    CHECK_EQ_INT(kt_log_level_parse("error", &level), 0);
    CHECK_EQ_INT(level, KT_LOG_ERROR);
    CHECK_EQ_INT(kt_log_level_parse("loud", &level), -1);
    CHECK_EQ_INT(kt_log_level_parse(NULL, &level), -1);
}

/* ---- pid files and the db client -------------------------------------------------------------- */

TEST(pidfile_refuses_a_live_process_and_replaces_a_dead_one)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s", scratch_path("test.pid"));
    char error[PATH_MAX + 256] = "";
    CHECK_EQ_INT(kt_pidfile_write(path, error, sizeof error), 0);
    char *text = read_file(path);
    REQUIRE(text != NULL);
    char expected[32];
    snprintf(expected, sizeof expected, "%ld\n", (long)getpid());
    CHECK_EQ_STR(text, expected);
    free(text);
    /* Our own pid is not a conflict (a daemon rewriting its file). */
    CHECK_EQ_INT(kt_pidfile_write(path, error, sizeof error), 0);

    /* A live process: our parent. */
    snprintf(expected, sizeof expected, "%ld\n", (long)getppid());
    REQUIRE(write_text(path, expected, strlen(expected)) == 0);
    CHECK_EQ_INT(kt_pidfile_write(path, error, sizeof error), -1);
    CHECK(contains(error, "running"));

    /* A dead process: a child that has been reaped. */
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0)
        _exit(0);
    REQUIRE(waitpid(child, NULL, 0) == child);
    snprintf(expected, sizeof expected, "%ld\n", (long)child);
    REQUIRE(write_text(path, expected, strlen(expected)) == 0);
    CHECK_EQ_INT(kt_pidfile_write(path, error, sizeof error), 0);

    /* Garbage is treated as no pid. */
    REQUIRE(write_text(path, "not a pid", 9) == 0);
    CHECK_EQ_INT(kt_pidfile_write(path, error, sizeof error), 0);
}

TEST(db_connect_says_to_start_keytrustee_db)
{
    kt_paths paths;
    char error[PATH_MAX + 256] = "";
    char confdir[PATH_MAX];
    snprintf(confdir, sizeof confdir, "%s", scratch_path("nohome/.keytrustee"));
    REQUIRE(kt_paths_resolve(&paths, confdir, NULL, error, sizeof error) == 0);
    kt_db_connection *connection = kt_db_connect(&paths, error, sizeof error);
    CHECK(connection == NULL);
    CHECK(contains(error, "keytrustee-db is not running"));
    CHECK(contains(error, KT_DB_SOCKET_FILE));
    kt_db_disconnect(NULL);
}

/* ---- runner ----------------------------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *status, int type, struct FTW *walk)
{
    (void)status;
    (void)type;
    (void)walk;
    return remove(path);
}

int main(void)
{
    if (kt_crypto_init() != 0) {
        fprintf(stderr, "cannot initialise crypto\n");
        return 1;
    }
    snprintf(scratch, sizeof scratch, "%s/kt-unit-common.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (mkdtemp(scratch) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    int status = unit_run();
    if (nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "cannot remove %s\n", scratch);
    return status;
}
