/*
 * main.c — keytrustee-db: the database service.
 *
 *   keytrustee-db [--confdir DIR] [--pg-rootdir DIR] [--foreground] [--log-level LEVEL]
 *
 * Start-up does everything that can fail for an ordinary reason while the terminal still shows
 * the error: find the files, read db/keytrustee-db.conf, check the directories, take the
 * instance lock, make sure the database opens, bind the admin socket. Only then does it detach
 * (unless --foreground) — before any thread exists and before the writer store is opened, because
 * neither threads nor SQLite connections survive fork(). Then the pid file, the replication seam,
 * the writer thread and the accept thread start, and the main thread waits for signals:
 *   SIGTERM, SIGINT  stop accepting, let in-flight requests finish, stop the writer (which
 *                    checkpoints and closes the store), remove the socket and pid file, exit 0
 *   SIGHUP           reopen the log file (after logrotate moved it)
 *   SIGUSR1          raised by the process itself when an admin op asked for a role change
 *                    (role_change.c): everything is stopped as for SIGTERM, the change is carried
 *                    out, and everything starts again from keytrustee-db.conf in this process
 *
 * The instance lock (run/keytrustee-db.lock, flock) makes two keytrustee-db on the same home
 * impossible even when they start at the same instant; the pid file is for people and scripts.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "app/keytrustee-db/service.h"

#define KT_DB_PID_FILE  "keytrustee-db.pid"
#define KT_DB_LOCK_FILE "keytrustee-db.lock"
#define KT_DB_LOG_FILE  "keytrustee-db.log"

static const char usage[] =
    "usage: keytrustee-db [--confdir DIR] [--pg-rootdir DIR] [--foreground] [--log-level LEVEL]\n"
    "                     [--user NAME]\n"
    "  --confdir DIR      the .keytrustee directory; its parent is the home\n"
    "                     (default $KEYTRUSTEE_HOME/.keytrustee, else /var/lib/keytrustee)\n"
    "  --pg-rootdir DIR   the database directory (default HOME/db)\n"
    "  --foreground       stay attached and log to stderr\n"
    "  --log-level LEVEL  debug, info, warning or error (default info)\n"
    "  --user NAME        when started as root, run as NAME once the admin socket is bound\n"
    "                     (default " KT_SERVICE_USER "; '' stays root)\n";

typedef struct kt_db_options {
    const char *confdir;
    const char *rootdir;
    bool foreground;
    kt_log_level level;
    const char *user;
    bool user_given;
} kt_db_options;

typedef struct kt_db_files {
    char conf[PATH_MAX];
    char pid[PATH_MAX];
    char lock[PATH_MAX];
    char log[PATH_MAX];
} kt_db_files;

/* 0: run; 1: --help was answered; -1: a usage error was reported. */
static int parse_arguments(int argc, char **argv, kt_db_options *options)
{
    static const struct option long_options[] = {
        {"confdir", required_argument, NULL, 'c'},  {"pg-rootdir", required_argument, NULL, 'r'},
        {"foreground", no_argument, NULL, 'f'},     {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},           {"user", required_argument, NULL, 'u'},
        {NULL, 0, NULL, 0},
    };
    *options = (kt_db_options){.level = KT_LOG_INFO, .user = KT_SERVICE_USER};
    int option;
    opterr = 0;
    while ((option = getopt_long(argc, argv, "fh", long_options, NULL)) != -1) {
        switch (option) {
        case 'c': options->confdir = optarg; break;
        case 'r': options->rootdir = optarg; break;
        case 'f': options->foreground = true; break;
        case 'u': options->user = optarg; options->user_given = true; break;
        case 'h': fputs(usage, stdout); return 1;
        case 'l':
            if (kt_log_level_parse(optarg, &options->level) != 0) {
                fprintf(stderr, "keytrustee-db: --log-level '%s' is not debug, info, warning or "
                                "error\n%s", optarg, usage);
                return -1;
            }
            break;
        default:
            fprintf(stderr, "keytrustee-db: unknown or incomplete option '%s'\n%s",
                    argv[optind - 1], usage);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "keytrustee-db: unexpected argument '%s'\n%s", argv[optind], usage);
        return -1;
    }
    return 0;
}

static int resolve_files(kt_db_service *service, const kt_db_options *options, kt_db_files *files)
{
    char error[PATH_MAX + 256];
    if (kt_paths_resolve(&service->paths, options->confdir, options->rootdir, error,
                         sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    const kt_paths *paths = &service->paths;
    if (kt_path_join(files->conf, sizeof files->conf, paths->dbdir, KT_DB_CONF_FILE) != 0 ||
        kt_path_join(service->database_path, sizeof service->database_path, paths->dbdir,
                     KT_DB_FILE_NAME) != 0 ||
        kt_path_join(service->socket_path, sizeof service->socket_path, paths->rundir,
                     KT_DB_SOCKET_FILE) != 0 ||
        kt_path_join(files->pid, sizeof files->pid, paths->rundir, KT_DB_PID_FILE) != 0 ||
        kt_path_join(files->lock, sizeof files->lock, paths->rundir, KT_DB_LOCK_FILE) != 0 ||
        kt_path_join(files->log, sizeof files->log, paths->logdir, KT_DB_LOG_FILE) != 0) {
        kt_log(KT_LOG_ERROR, "the paths under %s are too long", paths->home);
        return -1;
    }
    return 0;
}

/* The database must have been bootstrapped; its conf is the sign. */
static int load_settings(kt_db_service *service, const kt_db_files *files)
{
    const char *dbdir = service->paths.dbdir;
    if (access(files->conf, F_OK) != 0 && errno == ENOENT) {
        kt_log(KT_LOG_ERROR, "no database in %s; run: ktadmin db --bootstrap --pg-rootdir %s",
               dbdir, dbdir);
        return -1;
    }
    char error[PATH_MAX + 512];
    if (kt_db_settings_load(files->conf, &service->settings, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    if (access(service->database_path, F_OK) != 0) {
        kt_log(KT_LOG_ERROR,
               "%s exists but the database %s cannot be found (%s); restore it from a backup, or "
               "move %s aside and run: ktadmin db --bootstrap --pg-rootdir %s",
               files->conf, service->database_path, strerror(errno), dbdir, dbdir);
        return -1;
    }
    return 0;
}

static int check_directories(const kt_db_service *service, bool foreground)
{
    char error[PATH_MAX * 2 + 256];
    if (kt_private_directory(service->paths.dbdir, error, sizeof error) != 0 ||
        kt_private_directory(service->paths.rundir, error, sizeof error) != 0 ||
        (!foreground && kt_private_directory(service->paths.logdir, error, sizeof error) != 0)) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    return 0;
}

/* Held (and inherited across the detach) for the life of the process. */
static int take_instance_lock(const kt_db_files *files, int *lock_fd)
{
    *lock_fd = open(files->lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (*lock_fd < 0) {
        kt_log(KT_LOG_ERROR, "cannot open the lock file %s: %s", files->lock, strerror(errno));
        return -1;
    }
    if (flock(*lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            kt_log(KT_LOG_ERROR, "keytrustee-db is already running for this home (it holds %s; "
                                 "its pid is in %s)", files->lock, files->pid);
        else
            kt_log(KT_LOG_ERROR, "cannot lock %s: %s", files->lock, strerror(errno));
        (void)close(*lock_fd);
        *lock_fd = -1;
        return -1;
    }
    return 0;
}

/* Opens the database read-only and closes it again, so a damaged or too-new database is reported
 * on the terminal. A reader never writes, so nothing reaches the disk outside the writer path. */
static int probe_database(const kt_db_service *service)
{
    kt_store *reader = NULL;
    kt_store_options options = {.writer = false};
    char error[PATH_MAX + 512];
    if (kt_store_open(&reader, service->database_path, &options, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "cannot open the database: %s", error);
        return -1;
    }
    int version = kt_store_schema_version(reader);
    kt_store_close(reader);
    if (version > kt_store_latest_schema_version()) {
        kt_log(KT_LOG_ERROR, "the database %s has schema version %d, newer than this "
               "keytrustee-db knows (%d); install the keytrustee that wrote it",
               service->database_path, version, kt_store_latest_schema_version());
        return -1;
    }
    return 0;
}

static int detach(const kt_db_options *options, const kt_db_files *files)
{
    if (options->foreground)
        return 0;
    if (kt_log_open(KT_DB_PROGRAM, options->level, files->log) != 0) {
        kt_log(KT_LOG_ERROR, "cannot open the log file %s: %s", files->log, strerror(errno));
        return -1;
    }
    char error[256];
    if (kt_daemonize(error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    return 0;
}

/* Blocks the signals main waits for (threads inherit the mask) and ignores SIGPIPE. */
static int set_up_signals(sigset_t *waited)
{
    if (sigemptyset(waited) != 0 || sigaddset(waited, SIGTERM) != 0 ||
        sigaddset(waited, SIGINT) != 0 || sigaddset(waited, SIGHUP) != 0 ||
        sigaddset(waited, SIGUSR1) != 0 ||
        pthread_sigmask(SIG_BLOCK, waited, NULL) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        kt_log(KT_LOG_ERROR, "cannot set up signal handling: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int open_stop_pipe(kt_db_service *service)
{
    int ends[2];
    if (pipe2(ends, O_CLOEXEC) != 0) {
        kt_log(KT_LOG_ERROR, "cannot create the stop pipe: %s", strerror(errno));
        return -1;
    }
    service->stop_read = ends[0];
    service->stop_write = ends[1];
    return 0;
}

/* Returns SIGUSR1 for a role change, SIGTERM or SIGINT for a stop. */
static int wait_for_event(const sigset_t *waited, const kt_db_options *options,
                          const kt_db_files *files)
{
    for (;;) {
        int number = 0;
        if (sigwait(waited, &number) != 0)
            continue;
        if (number == SIGHUP) {
            if (!options->foreground &&
                kt_log_open(KT_DB_PROGRAM, options->level, files->log) != 0)
                kt_log(KT_LOG_ERROR, "cannot reopen the log file %s: %s", files->log,
                       strerror(errno));
            kt_log(KT_LOG_INFO, "SIGHUP: log reopened");
            continue;
        }
        if (number == SIGUSR1) {
            kt_log(KT_LOG_INFO, "role change: restarting the service");
            return number;
        }
        kt_log(KT_LOG_INFO, "%s: stopping", number == SIGTERM ? "SIGTERM" : "SIGINT");
        return number;
    }
}

/* Replication, the writer and the accept thread: what a role change stops and starts again. */
static int start_parts(kt_db_service *service, kt_admin_server *server)
{
    char error[PATH_MAX + 512];
    if (kt_replication_glue_start(&service->replication, &service->settings, &service->paths,
                                  error, sizeof error) != 0 ||
        (kt_replication_glue_runs_writer(service->replication) &&
         kt_writer_start(&service->writer, service->database_path, service->replication, error,
                         sizeof error) != 0) ||
        kt_admin_server_start(server, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    kt_log(KT_LOG_INFO, "keytrustee-db %s started: role %s, database %s, admin socket %s",
           KT_VERSION, kt_db_role_name(service->settings.role), service->database_path,
           service->socket_path);
    return 0;
}

/* Starts everything that runs in the final process; the admin socket is already bound. */
static int start_service(kt_db_service *service, kt_admin_server *server, const kt_db_files *files,
                         bool *pid_written)
{
    char error[PATH_MAX + 512];
    if (kt_pidfile_write(files->pid, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    *pid_written = true; /* from here on the pid file is ours to remove */
    if (kt_audit_open(&service->paths, KT_DB_PROGRAM, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    return start_parts(service, server);
}

/* Stops what start_parts started, in dependency order: no new requests, in-flight ones
 * answered, then the writer, then replication (the VFS outlives the writer's connection). */
static void stop_parts(kt_db_service *service, kt_admin_server *server)
{
    if (service->stop_write >= 0) {
        (void)close(service->stop_write);
        service->stop_write = -1;
    }
    kt_admin_server_stop(server);
    kt_writer_stop(service->writer);
    service->writer = NULL;
    kt_replication_glue_stop(service->replication);
    service->replication = NULL;
    if (service->stop_read >= 0) {
        (void)close(service->stop_read);
        service->stop_read = -1;
    }
}

/* Stops in dependency order: no new requests, in-flight ones answered, then the writer. */
static void stop_service(kt_db_service *service, kt_admin_server *server, const char *pid_path)
{
    stop_parts(service, server);
    kt_audit_close(); /* no request left: flushes every event */
    if (pid_path != NULL && unlink(pid_path) != 0 && errno != ENOENT)
        kt_log(KT_LOG_WARNING, "cannot remove %s: %s", pid_path, strerror(errno));
}

/* After a role change: everything stopped, the change carried out (or not: then the old role),
 * the settings read again, and everything started again. */
static int restart(kt_db_service *service, kt_admin_server **server, const kt_db_files *files)
{
    stop_parts(service, *server);
    *server = NULL;
    (void)kt_role_change_perform(service);
    char error[PATH_MAX + 512];
    if (load_settings(service, files) != 0 || open_stop_pipe(service) != 0)
        return -1;
    if (kt_admin_server_bind(server, service, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    return start_parts(service, *server);
}

/* Serves until SIGTERM or SIGINT; 0 for a clean stop, 1 when a restart failed. */
static int serve(kt_db_service *service, kt_admin_server **server, const sigset_t *waited,
                 const kt_db_options *options, const kt_db_files *files)
{
    for (;;) {
        kt_role_change_watch_start(service);
        int event = wait_for_event(waited, options, files);
        kt_role_change_watch_stop(service);
        if (event != SIGUSR1)
            return 0;
        if (restart(service, server, files) != 0) {
            kt_log(KT_LOG_ERROR, "keytrustee-db could not start again after the role change; "
                                 "see the messages above, fix, and start it again");
            return 1;
        }
    }
}

/* As root: hands the admin socket to the service user (keytrusteed runs as it too), then becomes
 * it. The replication port is bound later, as that user (it is above 1024). */
static int drop_privileges(const kt_db_service *service, const kt_db_options *options)
{
    char error[PATH_MAX + 256];
    uid_t uid;
    gid_t gid;
    if (kt_user_ids(options->user, &uid, &gid) == 0 && chown(service->socket_path, uid, gid) != 0) {
        kt_log(KT_LOG_ERROR, "cannot hand %s to user %s: %s", service->socket_path, options->user,
               strerror(errno));
        return -1;
    }
    if (kt_privilege_drop(options->user, options->user_given, error, sizeof error) != 0 ||
        kt_process_harden(error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    return 0;
}

/* Everything before the detach: every check that can tell the user something. */
static int prepare(kt_db_service *service, const kt_db_options *options, kt_db_files *files,
                   int *lock_fd)
{
    char error[256];
    if (kt_crypto_init() != 0) {
        kt_log(KT_LOG_ERROR, "cannot initialise libsodium");
        return -1;
    }
    if (kt_process_harden(error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return -1;
    }
    if (resolve_files(service, options, files) != 0 || load_settings(service, files) != 0 ||
        check_directories(service, options->foreground) != 0 ||
        take_instance_lock(files, lock_fd) != 0 || probe_database(service) != 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    kt_db_options options;
    int parsed = parse_arguments(argc, argv, &options);
    if (parsed != 0)
        return parsed > 0 ? 0 : 2;
    if (kt_log_open(KT_DB_PROGRAM, options.level, NULL) != 0)
        return 1;
    kt_db_service service = {.stop_read = -1, .stop_write = -1};
    if (pthread_mutex_init(&service.role_mutex, NULL) != 0) {
        kt_log(KT_LOG_ERROR, "cannot set up the role change mutex");
        return 1;
    }
    kt_db_files files;
    memset(&files, 0, sizeof files);
    int lock_fd = -1;
    kt_admin_server *server = NULL;
    char error[PATH_MAX + 512];
    if (prepare(&service, &options, &files, &lock_fd) != 0)
        return 1;
    if (kt_admin_server_bind(&server, &service, error, sizeof error) != 0) {
        kt_log(KT_LOG_ERROR, "%s", error);
        return 1;
    }
    if (drop_privileges(&service, &options) != 0) {
        kt_admin_server_stop(server);
        return 1;
    }
    sigset_t waited;
    bool pid_written = false;
    int status = 1;
    if (detach(&options, &files) == 0 && set_up_signals(&waited) == 0 &&
        open_stop_pipe(&service) == 0) {
        if (start_service(&service, server, &files, &pid_written) == 0)
            status = serve(&service, &server, &waited, &options, &files);
    }
    stop_service(&service, server, pid_written ? files.pid : NULL);
    kt_log(KT_LOG_INFO, "keytrustee-db stopped");
    (void)close(lock_fd);
    return status;
}
