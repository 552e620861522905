/* The host port: the device as a POSIX process, so every machine has a device to verify.
 *
 *   tinyconv-device            open a pseudo-terminal, print its slave path on the first line
 *   tinyconv-device --tcp P    listen on 127.0.0.1:P (0 picks a port), print socket://127.0.0.1:P
 *
 * Either way the first stdout line is something pyserial opens. The process serves one client
 * and exits when it hangs up (pty: the last slave descriptor closes; TCP: the peer closes).
 * Ticks are microseconds of CLOCK_MONOTONIC. */
#define _XOPEN_SOURCE 600

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tc_port.h"

extern int tc_main_argc;
extern char **tc_main_argv;

const char tc_port_target_name[] = "host";

static int link_fd = -1;
static int is_pty;
static int peer_seen;  /* pty: a client has opened the slave side at least once */
static uint8_t rx_buf[4096];
const uint32_t tc_port_rx_capacity = (uint32_t)sizeof rx_buf;
static size_t rx_len;
static size_t rx_pos;

static void die(const char *what)
{
    fprintf(stderr, "tinyconv-device: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void make_raw(int fd)
{
    struct termios t;
    if (tcgetattr(fd, &t) != 0) {
        die("tcgetattr");
    }
    t.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON |
                             IXOFF);
    t.c_oflag &= ~(tcflag_t)OPOST;
    t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    t.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    t.c_cflag |= CS8;
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(fd, TCSANOW, &t) != 0) {
        die("tcsetattr");
    }
}

static void open_pty(void)
{
    const char *name;
    int slave;
    link_fd = posix_openpt(O_RDWR | O_NOCTTY);
    if (link_fd < 0 || grantpt(link_fd) != 0 || unlockpt(link_fd) != 0) {
        die("posix_openpt");
    }
    name = ptsname(link_fd);
    if (name == NULL) {
        die("ptsname");
    }
    /* Raw mode lives on the slave side; set it before any client can open it. */
    slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) {
        die("open pty slave");
    }
    make_raw(slave);
    close(slave);
    is_pty = 1;
    printf("%s\n", name);
}

static void open_tcp(const char *port_text)
{
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    char *end;
    long port = strtol(port_text, &end, 10);
    int listener;
    int one = 1;

    if (*port_text == '\0' || *end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "tinyconv-device: --tcp needs a port number 0..65535, got '%s'\n",
                port_text);
        exit(2);
    }
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) {
        die("socket");
    }
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1) != 0) {
        die("bind 127.0.0.1");
    }
    if (getsockname(listener, (struct sockaddr *)&addr, &addr_len) != 0) {
        die("getsockname");
    }
    printf("socket://127.0.0.1:%u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);
    do {
        link_fd = accept(listener, NULL, NULL);
    } while (link_fd < 0 && errno == EINTR);
    if (link_fd < 0) {
        die("accept");
    }
    close(listener);
    setsockopt(link_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void tc_port_init(void)
{
    signal(SIGPIPE, SIG_IGN);  /* a vanished peer shows up as a failed read, not a signal */
    if (tc_main_argc == 3 && strcmp(tc_main_argv[1], "--tcp") == 0) {
        open_tcp(tc_main_argv[2]);
    } else if (tc_main_argc == 1) {
        open_pty();
    } else {
        fprintf(stderr, "usage: tinyconv-device [--tcp PORT]\n");
        exit(2);
    }
    fflush(stdout);
}

/* pty: until a client opens the slave, the master reports POLLHUP; wait for that to clear
 * (or for data, in case a client wrote and closed before we looked). */
static void wait_for_pty_client(void)
{
    struct pollfd p;
    const struct timespec pause = {0, 5000000L};
    p.fd = link_fd;
    p.events = POLLIN;
    for (;;) {
        p.revents = 0;
        if (poll(&p, 1, 100) < 0 && errno != EINTR) {
            die("poll");
        }
        if ((p.revents & POLLIN) != 0 || (p.revents & POLLHUP) == 0) {
            peer_seen = 1;
            return;
        }
        nanosleep(&pause, NULL);
    }
}

int tc_port_getc(void)
{
    if (rx_pos == rx_len) {
        ssize_t n;
        if (is_pty && !peer_seen) {
            wait_for_pty_client();
        }
        do {
            n = read(link_fd, rx_buf, sizeof rx_buf);
        } while (n < 0 && errno == EINTR);
        if (n <= 0) {
            return -1;  /* EIO on a pty whose slave closed, 0 on a closed socket */
        }
        rx_len = (size_t)n;
        rx_pos = 0;
    }
    return rx_buf[rx_pos++];
}

void tc_port_write(const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(link_fd, data, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return;  /* peer gone: the next read ends the process */
        }
        data += n;
        len -= (size_t)n;
    }
}

uint32_t tc_port_ticks(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint32_t)((uint64_t)now.tv_sec * 1000000U + (uint64_t)now.tv_nsec / 1000U);
}
