/*
 * tlsdrive: the SMTP load generator of bench/run --tls, which treats every
 * MTA alike (smtp-source has no TLS).
 *
 *   tlsdrive [-T] [-Q] -s SESSIONS -m MESSAGES -l LENGTH -f FROM -t RCPT
 *            -M HELO HOST:PORT
 *
 * SESSIONS processes (fork, so that no lock serializes them) share the
 * MESSAGES between them. Each message is one TCP connection: greeting,
 * EHLO, with -T STARTTLS and a full TLS handshake (a new SSL object with no
 * session to resume, the client's session cache off, no tickets asked for)
 * and EHLO again, then MAIL, RCPT, DATA with a message of exactly LENGTH
 * octets, QUIT. Commands are sent one at a time, as smtp-source sends them.
 * -Q: TCP_QUICKACK before every read of a reply, so that the driver ACKs
 * at once what the server sent (see BENCHMARKS.md: a server that writes
 * TLS 1.3 session tickets and then its EHLO reply without TCP_NODELAY
 * waits for the client's delayed ACK, about 40 ms on Linux).
 *
 * Output, one line a message (each line written whole, so the processes'
 * lines do not mix):
 *   ok HANDSHAKE_US EHLO_US SESSION_US REUSED VERSION CIPHER
 *      HANDSHAKE_US: from sending STARTTLS to the handshake done (0 plain);
 *      EHLO_US: from sending EHLO after the handshake to its reply (0 plain);
 *      SESSION_US: from connect() to the reply to QUIT;
 *      REUSED: 1 if the TLS session was resumed (it must not be).
 *   err TEXT       the process stops at its first error
 * Exit status 0 if every message got its 250, else 1.
 *
 * Written in C with OpenSSL (on this machine: gcc and libssl-dev, nothing
 * downloaded) because on 2 cores the driver's own CPU competes with the
 * MTA's: see BENCHMARKS.md, "postie 9: TLS and LMTP".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    SSL *ssl;
    char buf[8192];
    size_t have;
};

static const char *from = "src@bench.test", *rcpt = "bench@bench.test",
                  *helo = "client.bench.test";
static struct sockaddr_in addr;
static int quickack;
static char *message;
static size_t message_len;

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* One line to stdout in one write(2): lines of 8 processes do not mix. */
static void out(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    if (write(1, line, n) < 0)
        _exit(2);
}

static int send_all(struct conn *c, const char *p, size_t len)
{
    while (len > 0) {
        if (quickack) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        ssize_t n = c->ssl ? SSL_write(c->ssl, p, (int)len) : write(c->fd, p, len);
        if (n <= 0) {
            if (!c->ssl && n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one reply (the last line of a multi-line one); returns its code,
 * -1 on a closed or failed connection. `text` gets the last line. */
static int reply(struct conn *c, char *text, size_t textlen)
{
    for (;;) {
        char *eol = memmem(c->buf, c->have, "\r\n", 2);
        if (eol) {
            size_t len = (size_t)(eol - c->buf);
            int last = len < 4 || c->buf[3] != '-';
            int code = len >= 3 ? atoi(c->buf) : -1;
            if (last && text) {
                size_t k = len < textlen - 1 ? len : textlen - 1;
                memcpy(text, c->buf, k);
                text[k] = 0;
            }
            memmove(c->buf, eol + 2, c->have - len - 2);
            c->have -= len + 2;
            if (last)
                return code;
            continue;
        }
        if (c->have == sizeof c->buf)
            return -1;
        if (quickack) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
        }
        ssize_t n = c->ssl ? SSL_read(c->ssl, c->buf + c->have, (int)(sizeof c->buf - c->have))
                           : read(c->fd, c->buf + c->have, sizeof c->buf - c->have);
        if (n <= 0) {
            if (!c->ssl && n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        c->have += (size_t)n;
    }
}

/* Sends `cmd` (without CRLF) and wants `want`; on anything else prints
 * an err line and returns -1. */
static int step(struct conn *c, const char *cmd, int want)
{
    char line[600], text[256];
    snprintf(line, sizeof line, "%s\r\n", cmd);
    if (send_all(c, line, strlen(line)) < 0) {
        out("err %s: send failed", cmd);
        return -1;
    }
    int code = reply(c, text, sizeof text);
    if (code != want) {
        out("err %s: %s", cmd, code < 0 ? "connection closed" : text);
        return -1;
    }
    return 0;
}

static void ssl_error(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out("err %s: %s", what, e ? buf : "connection closed");
}

static int one_message(SSL_CTX *ctx, int tls)
{
    struct conn c = {.fd = -1};
    char cmd[600], text[256];
    long long hs_us = 0, ehlo_us = 0, t0 = now_us();
    int ok = -1, reused = 0;
    const char *version = "-", *cipher = "-";

    c.fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        out("err connect: %s", strerror(errno));
        goto done;
    }
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int code = reply(&c, text, sizeof text);
    if (code != 220) {
        out("err greeting: %s", code < 0 ? "connection closed" : text);
        goto done;
    }
    snprintf(cmd, sizeof cmd, "EHLO %s", helo);
    if (step(&c, cmd, 250) < 0)
        goto done;
    if (tls) {
        long long t1 = now_us();
        if (step(&c, "STARTTLS", 220) < 0)
            goto done;
        if (c.have) {
            out("err plaintext after the 220 to STARTTLS");
            goto done;
        }
        c.ssl = SSL_new(ctx);
        if (!c.ssl || !SSL_set_fd(c.ssl, c.fd)) {
            ssl_error("SSL_new");
            goto done;
        }
        if (SSL_connect(c.ssl) != 1) {
            ssl_error("TLS handshake");
            goto done;
        }
        hs_us = now_us() - t1;
        reused = SSL_session_reused(c.ssl);
        version = SSL_get_version(c.ssl);
        cipher = SSL_get_cipher_name(c.ssl);
        long long t2 = now_us();
        if (step(&c, cmd, 250) < 0)
            goto done;
        ehlo_us = now_us() - t2;
    }
    snprintf(cmd, sizeof cmd, "MAIL FROM:<%s>", from);
    if (step(&c, cmd, 250) < 0)
        goto done;
    snprintf(cmd, sizeof cmd, "RCPT TO:<%s>", rcpt);
    if (step(&c, cmd, 250) < 0 || step(&c, "DATA", 354) < 0)
        goto done;
    if (send_all(&c, message, message_len) < 0) {
        out("err message: send failed");
        goto done;
    }
    if (step(&c, ".", 250) < 0 || step(&c, "QUIT", 221) < 0)
        goto done;
    out("ok %lld %lld %lld %d %s %s", hs_us, ehlo_us, now_us() - t0, reused, version, cipher);
    ok = 0;
done:
    if (c.ssl) {
        if (ok == 0)
            SSL_shutdown(c.ssl);
        SSL_free(c.ssl);
    }
    if (c.fd >= 0)
        close(c.fd);
    return ok;
}

static void make_message(size_t length)
{
    message = malloc(length + 8);
    int n = snprintf(message, length + 8,
                     "From: <%s>\r\nTo: <%s>\r\nSubject: tlsdrive\r\n\r\n", from, rcpt);
    /* lines of "X", each ended by CRLF; the message ends with CRLF */
    for (size_t i = (size_t)n; i < length; i++)
        message[i] = 'X';
    for (size_t i = (size_t)n + 78; i + 1 < length; i += 80) {
        message[i] = '\r';
        message[i + 1] = '\n';
    }
    if (length >= (size_t)n + 2) {
        message[length - 2] = '\r';
        message[length - 1] = '\n';
    }
    message_len = length > (size_t)n ? length : (size_t)n;
}

static void usage(void)
{
    fprintf(stderr, "usage: tlsdrive [-T] [-Q] -s SESSIONS -m MESSAGES -l LENGTH "
                    "[-f FROM] [-t RCPT] [-M HELO] HOST:PORT\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int tls = 0, sessions = 1, messages = 1, opt;
    size_t length = 1024;
    while ((opt = getopt(argc, argv, "TQs:m:l:f:t:M:")) != -1) {
        switch (opt) {
        case 'T': tls = 1; break;
        case 'Q': quickack = 1; break;
        case 's': sessions = atoi(optarg); break;
        case 'm': messages = atoi(optarg); break;
        case 'l': length = (size_t)atol(optarg); break;
        case 'f': from = optarg; break;
        case 't': rcpt = optarg; break;
        case 'M': helo = optarg; break;
        default: usage();
        }
    }
    if (optind != argc - 1 || sessions < 1 || messages < 1)
        usage();
    char *host = argv[optind], *colon = strrchr(host, ':');
    if (!colon)
        usage();
    *colon = 0;
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        usage();
    make_message(length);

    for (int s = 0; s < sessions; s++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid > 0)
            continue;
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx) {
            ssl_error("SSL_CTX_new");
            _exit(1);
        }
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        int status = 0;
        for (int i = s; i < messages; i += sessions) {
            if (one_message(ctx, tls) < 0) {
                status = 1;
                break;
            }
        }
        SSL_CTX_free(ctx);
        _exit(status);
    }
    int failed = 0, status;
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    return failed;
}
