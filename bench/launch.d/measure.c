/* Runs a command once and prints "MICROSECONDS PEAK_RSS_KIB EXIT" for it.
 *
 * A small static process forks and execs the command, so the child's peak
 * RSS starts from this harness's few hundred KiB rather than from an
 * interpreter's, and the time covers fork to reaped exit only.
 *
 * MEASURE_NETNS=PATH runs the command in that network namespace, joined
 * before the clock starts: rows that need a namespace playing the host
 * (a firewall table, published ports) pay no nsenter exec. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sched.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: measure COMMAND [ARGS...]\n");
        return 2;
    }
    const char *netns = getenv("MEASURE_NETNS");
    if (netns && *netns) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) { perror(netns); return 2; }
        close(fd);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execvp(argv[1], argv + 1);
        perror(argv[1]);
        _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("%ld %ld %d\n", us, ru.ru_maxrss, code);
    return 0;
}
