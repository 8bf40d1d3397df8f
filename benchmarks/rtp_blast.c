/* Native RTP load generator for benchmarks/rtp_load.py: its payload (passthrough) method, and
 * its burst method (transcoding, mixing, echo) for G.711 parties.
 *
 * rtp_load.py compiles this file (gcc -O2) on first use and runs it as a subprocess that
 * inherits the parties' UDP sockets, already bound and with SO_TIMESTAMPNS on. It does what
 * rtp_load's Python generator does for either method, with the same packets, the same windows
 * and the same figures, in one thread:
 *
 *   - every party sends one RTP packet every 20 ms at its 1 ms slot (clock_nanosleep,
 *     TIMER_ABSTIME, CLOCK_REALTIME between slots);
 *       payload: 172 bytes; the payload is (sender leg, per-leg count, send time in seconds),
 *       network order "!IId", then a 144-byte body cut from the pattern that rtp_load gives
 *       (offset (7 * leg + count) & 0xFF);
 *       burst: frame `frame mod length` of the party's cycle of encoded frames, which rtp_load
 *       gives (its `_burst_frames`); the frame at the cycle's burst phase is a burst, whose send
 *       time goes into the session's recent bursts (the last 16, as rtp_load's deque);
 *   - after each slot's sends it drains every readable socket (epoll, recvmmsg) and takes the
 *     kernel's arrival timestamp (SCM_TIMESTAMPNS) of each datagram, so the time it picks a
 *     datagram up does not count against the relay;
 *       payload: the body must be intact and from another party of the receiver's session;
 *       burst: the payload is decoded (G.711 u-law or A-law, a 256-entry table per law built
 *       at start from the G.711 expansion) and the first frame whose peak reaches the burst
 *       level after a quiet one is matched against the latest burst sent by another party of
 *       the session (by the receiver itself when a session has one party: an echo);
 *   - a packet or burst belongs to the window in which it was sent; at each window's start and
 *     end it prints "start" / "stop", and `drain` after the end one JSON line with the window's
 *     figures.
 *
 * Configuration on stdin, whitespace separated:
 *   method ("payload" or "burst")
 *   legs width windows duration_ns gap_ns drain_ns warmup_ns pause_ns slots samples_kept
 *   codec count, then the codec names (burst: "pcmu" or "pcma" only)
 *   payload: the body pattern in hex (body + 256 bytes)
 *   burst: burst_level quiet_level match_ns, the cycle count, then per cycle: its frame count,
 *          its burst phase, and each frame in hex
 *   per leg: fd port payload_type codec_index slot ssrc sequence timestamp step cycle_index
 *            (cycle_index -1 in the payload method)
 * A leg's session is its index / width. Before the load every leg sends once (the relay may
 * then send to it), then `pause` passes, then `warmup` of load before the first window.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RTP_HEADER 12
#define PAYLOAD_HEADER 16
#define PAYLOAD_BYTES 160
#define BODY (PAYLOAD_BYTES - PAYLOAD_HEADER)
#define PACKET (RTP_HEADER + PAYLOAD_BYTES)
#define FRAME_NS 20000000LL
#define BATCH 16
#define MAX_CODECS 8
#define MAX_FRAME 1400
#define RECENT 16 /* bursts kept per session (rtp_load: deque(maxlen=16)) */

struct leg {
    int fd;
    struct sockaddr_in target;
    uint8_t payload_type;
    int codec;
    int opus;
    int session;
    int slot;
    uint32_t ssrc;
    uint16_t sequence;
    uint32_t timestamp;
    uint32_t step;
    uint64_t count;
    int cycle;              /* burst: index into cycles */
    const int16_t *decoded; /* burst: the expansion table of the leg's law */
    int armed;              /* burst: quiet since the last loud frame */
};

struct frame {
    size_t size;
    uint8_t data[MAX_FRAME];
};

/* A party's payload cycle (burst method): frame k is sent when frame number mod length == k. */
struct cycle {
    int length;
    int burst_phase;
    struct frame *frames;
};

/* A session's latest bursts, oldest first from `next` (a ring). */
struct recent {
    int64_t sent[RECENT];
    int leg[RECENT];
    int length, next;
};

struct samples {
    int64_t *values;
    size_t length;
    size_t capacity;
};

struct window {
    long long sent, arrived, corrupt, opus_packets, opus_bytes, opus_stereo;
    long long bursts, unmatched; /* burst method */
    struct samples latency[MAX_CODECS]; /* ns, per receiving codec */
    struct samples lags;                /* ns, per slot */
    double cpu_share;
};

static struct leg *legs;
static int leg_count, width, window_count, slots, codec_count;
static long long samples_kept;
static int64_t duration_ns, gap_ns, drain_ns, warmup_ns, pause_ns;
static int64_t first_start, period;
static char codec_names[MAX_CODECS][32];
static uint8_t pattern[BODY + 256];
static struct window *windows;
static long long send_errors;
static int epoll_fd;
static int burst_method;
static int burst_level, quiet_level;
static int64_t match_ns;
static struct cycle *cycles;
static int cycle_count;
static struct recent *recent;
static int16_t expansion[2][256]; /* G.711 u-law, A-law: sample of every byte */

static void fail(const char *what)
{
    fprintf(stderr, "rtp_blast: %s\n", what);
    exit(2);
}

static void push(struct samples *samples, int64_t value)
{
    if (samples->length == samples->capacity) {
        size_t capacity = samples->capacity ? samples->capacity * 2 : 4096;
        int64_t *grown = realloc(samples->values, capacity * sizeof *grown);
        if (grown == NULL)
            fail("out of memory");
        samples->values = grown;
        samples->capacity = capacity;
    }
    samples->values[samples->length++] = value;
}

static int64_t realtime_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static int64_t cpu_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void sleep_until(int64_t moment)
{
    struct timespec until = {.tv_sec = moment / 1000000000LL, .tv_nsec = moment % 1000000000LL};
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &until, NULL) == EINTR)
        ;
}

/* The window `moment` falls in, or -1 (rtp_load.LoadWindows.index). */
static int window_of(int64_t moment)
{
    if (windows == NULL || moment < first_start)
        return -1;
    int64_t offset = moment - first_start;
    int64_t window = offset / period;
    if (window >= window_count || offset - window * period >= duration_ns)
        return -1;
    return (int)window;
}

static void put32(uint8_t *at, uint32_t value)
{
    at[0] = (uint8_t)(value >> 24);
    at[1] = (uint8_t)(value >> 16);
    at[2] = (uint8_t)(value >> 8);
    at[3] = (uint8_t)value;
}

static uint32_t get32(const uint8_t *at)
{
    return (uint32_t)at[0] << 24 | (uint32_t)at[1] << 16 | (uint32_t)at[2] << 8 | at[3];
}

static void put_double(uint8_t *at, double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    put32(at, (uint32_t)(bits >> 32));
    put32(at + 4, (uint32_t)bits);
}

static double get_double(const uint8_t *at)
{
    uint64_t bits = (uint64_t)get32(at) << 32 | get32(at + 4);
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* The G.711 expansion (ITU-T G.711 decoding): u-law bytes are stored inverted, a biased
 * magnitude (mantissa * 8 + 132) << exponent less the bias; A-law bytes have their even bits
 * inverted, magnitude (mantissa * 16 + 8), from exponent 1 on (mantissa * 16 + 264) shifted
 * by exponent - 1, and a set sign bit means positive. */
static void build_expansion(void)
{
    for (int byte = 0; byte < 256; byte++) {
        int ulaw = ~byte & 0xFF;
        int magnitude = (((ulaw & 0x0F) << 3) + 0x84) << ((ulaw >> 4) & 7);
        expansion[0][byte] = (int16_t)(ulaw & 0x80 ? 0x84 - magnitude : magnitude - 0x84);
        int alaw = byte ^ 0x55;
        int exponent = (alaw >> 4) & 7;
        magnitude = exponent ? (((alaw & 0x0F) << 4) + 0x108) << (exponent - 1)
                             : ((alaw & 0x0F) << 4) + 8;
        expansion[1][byte] = (int16_t)(alaw & 0x80 ? magnitude : -magnitude);
    }
}

/* The RTP header of a party's next packet. */
static void put_header(uint8_t *packet, const struct leg *leg)
{
    packet[0] = 0x80;
    packet[1] = leg->payload_type;
    packet[2] = (uint8_t)(leg->sequence >> 8);
    packet[3] = (uint8_t)leg->sequence;
    put32(packet + 4, leg->timestamp);
    put32(packet + 8, leg->ssrc);
}

/* One party's packet for `frame`, sent at once (rtp_load._Leg.stamp and send_frame). */
static void send_packet(int index, int64_t frame)
{
    struct leg *leg = &legs[index];
    uint8_t packet[RTP_HEADER + MAX_FRAME];
    size_t size;
    int64_t now;
    put_header(packet, leg);
    if (burst_method) {
        const struct cycle *cycle = &cycles[leg->cycle];
        int phase = (int)(((frame % cycle->length) + cycle->length) % cycle->length);
        size = RTP_HEADER + cycle->frames[phase].size;
        memcpy(packet + RTP_HEADER, cycle->frames[phase].data, cycle->frames[phase].size);
        now = realtime_ns();
        if (phase == cycle->burst_phase) {
            struct recent *bursts = &recent[leg->session];
            bursts->sent[bursts->next] = now;
            bursts->leg[bursts->next] = index;
            bursts->next = (bursts->next + 1) % RECENT;
            if (bursts->length < RECENT)
                bursts->length++;
            int window = window_of(now);
            if (window >= 0)
                windows[window].bursts++;
        }
    } else {
        size_t offset = (size_t)((7ULL * (uint64_t)index + leg->count) & 0xFF);
        size = PACKET;
        put32(packet + 12, (uint32_t)index);
        put32(packet + 16, (uint32_t)leg->count);
        memcpy(packet + RTP_HEADER + PAYLOAD_HEADER, pattern + offset, BODY);
        now = realtime_ns();
        put_double(packet + 20, (double)now * 1e-9);
    }
    if (sendto(leg->fd, packet, size, 0, (const struct sockaddr *)&leg->target,
               sizeof leg->target) < 0)
        send_errors++; /* counted as loss by the receiving party */
    leg->sequence = (uint16_t)(leg->sequence + 1);
    leg->timestamp += leg->step;
    leg->count++;
    int window = window_of(now);
    if (window >= 0)
        windows[window].sent++;
}

/* A burst method datagram (rtp_load._Leg._match_burst): the first loud frame after a quiet
 * one is timed against the latest burst sent by another party of the session (by the party
 * itself in a one-party session), sent no later than its arrival. */
static void match_burst(int index, const uint8_t *data, size_t length, int64_t arrival,
                        int arrival_window)
{
    struct leg *leg = &legs[index];
    if (length == RTP_HEADER)
        return; /* nothing to decode */
    int level = 0;
    for (size_t i = RTP_HEADER; i < length; i++) {
        int sample = abs(leg->decoded[data[i]]);
        if (sample > level)
            level = sample;
    }
    if (level < burst_level) {
        if (level < quiet_level)
            leg->armed = 1; /* quiet again: the next loud frame is a new burst */
        return;
    }
    if (!leg->armed)
        return; /* still the same burst (codec ringing) */
    leg->armed = 0;
    int echo = width == 1;
    const struct recent *bursts = &recent[leg->session];
    for (int k = 1; k <= bursts->length; k++) {
        int at = (bursts->next - k + RECENT) % RECENT;
        int64_t sent = bursts->sent[at];
        if ((bursts->leg[at] == index) != echo || sent > arrival)
            continue;
        int window = window_of(sent);
        if (arrival - sent < match_ns) {
            if (window >= 0)
                push(&windows[window].latency[leg->codec], arrival - sent);
        } else if (arrival_window >= 0) {
            windows[arrival_window].unmatched++;
        }
        return;
    }
    if (arrival_window >= 0)
        windows[arrival_window].unmatched++;
}

/* One datagram for party `index`, arrived (kernel time) at `arrival`. */
static void receive(int index, const uint8_t *data, size_t length, int64_t arrival)
{
    struct leg *leg = &legs[index];
    if (windows == NULL || length < RTP_HEADER || (data[1] >= 192 && data[1] <= 223))
        return; /* before measuring, too short, or RTCP */
    int arrival_window = window_of(arrival);
    if (arrival_window >= 0) {
        windows[arrival_window].arrived++;
        windows[arrival_window].opus_packets += leg->opus;
        if (leg->opus && length > RTP_HEADER) {
            windows[arrival_window].opus_bytes += (long long)(length - RTP_HEADER);
            windows[arrival_window].opus_stereo += (data[RTP_HEADER] >> 2) & 1;
        }
    }
    if (burst_method) {
        match_burst(index, data, length, arrival, arrival_window);
        return;
    }
    if (length != PACKET) {
        if (arrival_window >= 0)
            windows[arrival_window].corrupt++; /* as rtp_load: sent "now" by nobody */
        return;
    }
    uint32_t sender = get32(data + 12);
    uint32_t count = get32(data + 16);
    double sent_at = get_double(data + 20);
    if (!(sent_at > 0.0 && sent_at < 9e9))
        sent_at = (double)arrival * 1e-9; /* nonsense: judged at its arrival */
    int64_t sent_ns = (int64_t)(sent_at * 1e9 + 0.5);
    int window = window_of(sent_ns);
    if (window < 0)
        return;
    size_t offset = (size_t)((7ULL * sender + count) & 0xFF);
    if (sender == (uint32_t)index || sender / (uint32_t)width != (uint32_t)leg->session ||
        memcmp(data + RTP_HEADER + PAYLOAD_HEADER, pattern + offset, BODY) != 0) {
        windows[window].corrupt++;
        return;
    }
    push(&windows[window].latency[leg->codec], arrival - sent_ns);
}

/* Everything queued on every socket, without blocking. */
static void drain_sockets(void)
{
    static struct epoll_event events[1024];
    static uint8_t buffers[BATCH][2048];
    static char controls[BATCH][CMSG_SPACE(sizeof(struct timespec))];
    static struct iovec vectors[BATCH];
    static struct mmsghdr messages[BATCH];
    for (;;) {
        int ready = epoll_wait(epoll_fd, events, 1024, 0);
        if (ready < 0) {
            if (errno == EINTR)
                continue;
            fail("epoll_wait failed");
        }
        if (ready == 0)
            return;
        for (int e = 0; e < ready; e++) {
            int index = (int)events[e].data.u32;
            for (;;) {
                for (int m = 0; m < BATCH; m++) {
                    vectors[m].iov_base = buffers[m];
                    vectors[m].iov_len = sizeof buffers[m];
                    memset(&messages[m].msg_hdr, 0, sizeof messages[m].msg_hdr);
                    messages[m].msg_hdr.msg_iov = &vectors[m];
                    messages[m].msg_hdr.msg_iovlen = 1;
                    messages[m].msg_hdr.msg_control = controls[m];
                    messages[m].msg_hdr.msg_controllen = sizeof controls[m];
                }
                int got = recvmmsg(legs[index].fd, messages, BATCH, MSG_DONTWAIT, NULL);
                if (got < 0) {
                    if (errno == EINTR || errno == ECONNREFUSED)
                        continue; /* an ICMP error reported on the socket: consumed */
                    break;        /* EAGAIN: nothing more queued (edge-triggered: drained) */
                }
                for (int m = 0; m < got; m++) {
                    int64_t arrival = 0;
                    struct msghdr *header = &messages[m].msg_hdr;
                    for (struct cmsghdr *c = CMSG_FIRSTHDR(header); c; c = CMSG_NXTHDR(header, c)) {
                        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                            struct timespec stamp;
                            memcpy(&stamp, CMSG_DATA(c), sizeof stamp);
                            arrival = (int64_t)stamp.tv_sec * 1000000000LL + stamp.tv_nsec;
                        }
                    }
                    receive(index, buffers[m], messages[m].msg_len, arrival ? arrival : realtime_ns());
                }
                if (got < BATCH)
                    break;
            }
        }
        if (ready < 1024)
            return;
    }
}

static int64_t *scratch;

static int compare_ns(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void swap_ns(int64_t *a, int64_t *b)
{
    int64_t t = *a;
    *a = *b;
    *b = t;
}

/* Rearranges values[0, length) so that values[k] is the k-th smallest, none after it smaller
 * (quickselect, median-of-three pivot): linear time, so a window of a million latencies does
 * not hold up the sending for long. */
static void select_kth(int64_t *values, size_t length, size_t k)
{
    size_t low = 0, high = length - 1;
    while (high > low) {
        size_t middle = low + (high - low) / 2;
        if (values[middle] < values[low])
            swap_ns(&values[middle], &values[low]);
        if (values[high] < values[low])
            swap_ns(&values[high], &values[low]);
        if (values[high] < values[middle])
            swap_ns(&values[high], &values[middle]);
        int64_t pivot = values[middle];
        size_t i = low, j = high;
        while (i <= j) {
            while (values[i] < pivot)
                i++;
            while (values[j] > pivot)
                j--;
            if (i <= j) {
                swap_ns(&values[i], &values[j]);
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            high = j;
        else if (k >= i)
            low = i;
        else
            return; /* between j and i: equal to the pivot */
    }
}

/* numpy.percentile (linear interpolation) of values in ns, in ms; reorders values. */
static double percentile_ms(int64_t *values, size_t length, double q)
{
    if (length == 0)
        return NAN;
    double rank = q / 100.0 * (double)(length - 1);
    size_t below = (size_t)rank;
    double fraction = rank - (double)below;
    select_kth(values, length, below);
    double low = (double)values[below];
    double high = low;
    if (below + 1 < length) {
        int64_t next = values[below + 1];
        for (size_t i = below + 2; i < length; i++)
            if (values[i] < next)
                next = values[i];
        high = (double)next;
    }
    return (low + (high - low) * fraction) / 1e6;
}

static void print_ms(double value)
{
    if (isnan(value))
        fputs("null", stdout);
    else
        printf("%.6f", value);
}

static void print_percentiles(int64_t *values, size_t length)
{
    printf("[%zu, ", length);
    print_ms(percentile_ms(values, length, 50));
    fputs(", ", stdout);
    print_ms(percentile_ms(values, length, 99));
    fputs("]", stdout);
}

/* The window's figures as one JSON line (rtp_load._window_figures). */
static void report(int index)
{
    struct window *w = &windows[index];
    size_t matched = 0;
    for (int c = 0; c < codec_count; c++)
        matched += w->latency[c].length;
    int64_t *all = realloc(scratch, (matched ? matched : 1) * sizeof *all);
    if (all == NULL)
        fail("out of memory");
    scratch = all;
    size_t at = 0;
    for (int c = 0; c < codec_count; c++) {
        if (w->latency[c].length)
            memcpy(all + at, w->latency[c].values, w->latency[c].length * sizeof *all);
        at += w->latency[c].length;
    }
    qsort(w->lags.values, w->lags.length, sizeof(int64_t), compare_ns);
    long long expected = burst_method ? w->bursts * (width > 1 ? width - 1 : 1) : w->sent;
    printf("{\"window\": %d, \"sent\": %lld, \"received\": %lld, \"expected\": %lld, "
           "\"matched\": %zu, \"unmatched\": %lld, \"corrupt\": %lld, \"p50\": ",
           index, w->sent, w->arrived, expected, matched, w->unmatched, w->corrupt);
    print_ms(percentile_ms(all, matched, 50));
    fputs(", \"p99\": ", stdout);
    print_ms(percentile_ms(all, matched, 99));
    printf(", \"generator_cpu\": %.6f, \"send_lag_p99_ms\": ", w->cpu_share);
    if (w->lags.length) {
        print_ms(percentile_ms(w->lags.values, w->lags.length, 99));
        fputs(", \"send_lag_max_ms\": ", stdout);
        print_ms((double)w->lags.values[w->lags.length - 1] / 1e6);
    } else {
        fputs("0.0, \"send_lag_max_ms\": 0.0", stdout);
    }
    printf(", \"send_errors\": %lld, \"samples_ms\": [", send_errors);
    if ((long long)matched <= samples_kept) {
        for (size_t i = 0; i < matched; i++)
            printf(i ? ", %.6f" : "%.6f", (double)all[i] / 1e6);
    }
    fputs("], \"opus_received_kbps\": ", stdout);
    int opus_legs = 0;
    for (int i = 0; i < leg_count; i++)
        opus_legs += legs[i].opus;
    double seconds = (double)duration_ns / 1e9;
    print_ms(opus_legs ? (double)w->opus_bytes * 8 / 1000 / seconds / opus_legs : NAN);
    fputs(", \"opus_stereo_share\": ", stdout);
    print_ms(w->opus_packets ? (double)w->opus_stereo / (double)w->opus_packets : NAN);
    fputs(", \"by_receiver\": {", stdout);
    for (int c = 0; c < codec_count; c++) {
        printf(c ? ", \"%s\": " : "\"%s\": ", codec_names[c]);
        print_percentiles(w->latency[c].values, w->latency[c].length);
    }
    fputs("}}\n", stdout);
    fflush(stdout);
    for (int c = 0; c < codec_count; c++)
        free(w->latency[c].values), w->latency[c] = (struct samples){0};
    free(w->lags.values), w->lags = (struct samples){0};
}

/* The frame cycles of the burst method, after the codec names. */
static void read_cycles(void)
{
    if (scanf("%d %d %" SCNd64 " %d", &burst_level, &quiet_level, &match_ns, &cycle_count) != 4 ||
        burst_level <= quiet_level || match_ns <= 0 || cycle_count <= 0)
        fail("bad burst levels or cycle count");
    cycles = calloc((size_t)cycle_count, sizeof *cycles);
    if (cycles == NULL)
        fail("out of memory");
    static char hex[2 * MAX_FRAME + 1];
    for (int c = 0; c < cycle_count; c++) {
        struct cycle *cycle = &cycles[c];
        if (scanf("%d %d", &cycle->length, &cycle->burst_phase) != 2 || cycle->length <= 0)
            fail("bad cycle");
        cycle->frames = calloc((size_t)cycle->length, sizeof *cycle->frames);
        if (cycle->frames == NULL)
            fail("out of memory");
        for (int f = 0; f < cycle->length; f++) {
            if (scanf("%2800s", hex) != 1 || strlen(hex) % 2 != 0)
                fail("bad cycle frame");
            struct frame *frame = &cycle->frames[f];
            frame->size = strlen(hex) / 2;
            for (size_t i = 0; i < frame->size; i++) {
                unsigned byte;
                if (sscanf(hex + 2 * i, "%2x", &byte) != 1)
                    fail("bad cycle frame");
                frame->data[i] = (uint8_t)byte;
            }
        }
    }
}

static void read_configuration(void)
{
    char method[16];
    if (scanf("%15s", method) != 1 ||
        (strcmp(method, "payload") != 0 && strcmp(method, "burst") != 0))
        fail("bad method (payload or burst)");
    burst_method = strcmp(method, "burst") == 0;
    if (scanf("%d %d %d %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %" SCNd64 " %d %lld", &leg_count, &width, &window_count,
              &duration_ns, &gap_ns, &drain_ns, &warmup_ns, &pause_ns, &slots, &samples_kept) != 10)
        fail("bad configuration header");
    if (leg_count <= 0 || width <= 0 || window_count <= 0 || slots <= 0 || duration_ns <= 0 ||
        FRAME_NS % slots != 0)
        fail("bad configuration values");
    if (scanf("%d", &codec_count) != 1 || codec_count <= 0 || codec_count > MAX_CODECS)
        fail("bad codec count");
    for (int c = 0; c < codec_count; c++)
        if (scanf("%31s", codec_names[c]) != 1)
            fail("bad codec name");
    if (burst_method) {
        read_cycles();
    } else {
        for (size_t i = 0; i < sizeof pattern; i++) {
            unsigned byte;
            if (scanf("%2x", &byte) != 1)
                fail("bad pattern");
            pattern[i] = (uint8_t)byte;
        }
    }
    legs = calloc((size_t)leg_count, sizeof *legs);
    if (legs == NULL)
        fail("out of memory");
    for (int i = 0; i < leg_count; i++) {
        struct leg *leg = &legs[i];
        unsigned port, payload_type, sequence;
        unsigned long ssrc, timestamp, step;
        if (scanf("%d %u %u %d %d %lu %u %lu %lu %d", &leg->fd, &port, &payload_type,
                  &leg->codec, &leg->slot, &ssrc, &sequence, &timestamp, &step, &leg->cycle) != 10)
            fail("bad leg line");
        if (leg->codec < 0 || leg->codec >= codec_count || leg->slot < 0 || leg->slot >= slots ||
            port > 65535 || payload_type > 127 ||
            (burst_method && (leg->cycle < 0 || leg->cycle >= cycle_count)))
            fail("bad leg values");
        if (burst_method) {
            const char *name = codec_names[leg->codec];
            if (strcmp(name, "pcmu") != 0 && strcmp(name, "pcma") != 0)
                fail("the burst method decodes G.711 only (pcmu, pcma)");
            leg->decoded = expansion[strcmp(name, "pcma") == 0];
            leg->armed = 1;
        }
        leg->target.sin_family = AF_INET;
        leg->target.sin_port = htons((uint16_t)port);
        leg->target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        leg->payload_type = (uint8_t)payload_type;
        leg->session = i / width;
        leg->opus = strcmp(codec_names[leg->codec], "opus") == 0;
        leg->ssrc = (uint32_t)ssrc;
        leg->sequence = (uint16_t)sequence;
        leg->timestamp = (uint32_t)timestamp;
        leg->step = (uint32_t)step;
    }
}

static int event;      /* the next of 3 per window: start, stop, report */
static int collecting = -1; /* the window whose slot lags are being kept */
static int64_t cpu_at_start;

/* The events due at `now`, in order; with `reports` 0 it stops at the first report. */
static void run_events(int64_t now, int reports)
{
    for (; event < 3 * window_count; event++) {
        int window = event / 3, kind = event % 3;
        int64_t at = first_start + window * period + (kind ? duration_ns : 0) +
                     (kind == 2 ? drain_ns : 0);
        if (at > now || (kind == 2 && !reports))
            return;
        if (kind == 0) {
            fputs("start\n", stdout);
            fflush(stdout);
            cpu_at_start = cpu_ns();
            collecting = window;
        } else if (kind == 1) {
            fputs("stop\n", stdout);
            fflush(stdout);
            windows[window].cpu_share = (double)(cpu_ns() - cpu_at_start) / (double)duration_ns;
            collecting = -1;
        } else {
            drain_sockets();
            report(window);
        }
    }
}

int main(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* the Python side gone: stop sending */
    build_expansion();
    read_configuration();
    if (burst_method) {
        recent = calloc((size_t)(leg_count / width + 1), sizeof *recent);
        if (recent == NULL)
            fail("out of memory");
    }
    epoll_fd = epoll_create1(0);
    if (epoll_fd < 0)
        fail("epoll_create1 failed");
    int on = 1;
    for (int i = 0; i < leg_count; i++) {
        setsockopt(legs[i].fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
        struct epoll_event event = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, legs[i].fd, &event) < 0)
            fail("epoll_ctl failed (is every fd a socket passed to this process?)");
    }
    /* The legs of each slot, in leg order. */
    int *members = malloc((size_t)leg_count * sizeof *members);
    int *slot_start = calloc((size_t)slots + 1, sizeof *slot_start);
    if (members == NULL || slot_start == NULL)
        fail("out of memory");
    for (int i = 0; i < leg_count; i++)
        slot_start[legs[i].slot + 1]++;
    for (int s = 0; s < slots; s++)
        slot_start[s + 1] += slot_start[s];
    int *filled = calloc((size_t)slots, sizeof *filled);
    if (filled == NULL)
        fail("out of memory");
    for (int i = 0; i < leg_count; i++)
        members[slot_start[legs[i].slot] + filled[legs[i].slot]++] = i;
    free(filled);

    /* Activation: every party sends once, so the relay may send to it (a NAT guard). */
    for (int i = 0; i < leg_count; i++)
        send_packet(i, -1);
    int64_t pause_end = realtime_ns() + pause_ns;
    while (realtime_ns() < pause_end) {
        drain_sockets();
        sleep_until(realtime_ns() + 1000000LL < pause_end ? realtime_ns() + 1000000LL : pause_end);
    }
    int64_t start = realtime_ns() + 10000000LL;
    first_start = start + warmup_ns;
    period = duration_ns + gap_ns;
    windows = calloc((size_t)window_count, sizeof *windows);
    if (windows == NULL)
        fail("out of memory");

    int64_t slot_ns = FRAME_NS / slots;
    for (int64_t frame = 0; event < 3 * window_count; frame++) {
        for (int s = 0; s < slots && event < 3 * window_count; s++) {
            int64_t scheduled = start + frame * FRAME_NS + s * slot_ns;
            if (realtime_ns() < scheduled)
                sleep_until(scheduled);
            int64_t now = realtime_ns();
            if (collecting >= 0)
                push(&windows[collecting].lags, now - scheduled);
            /* A window's start and stop before the slot's sends (they are on time for the
             * parent's CPU sampling); its report after them. */
            run_events(now, 0);
            for (int m = slot_start[s]; m < slot_start[s + 1]; m++)
                send_packet(members[m], frame);
            run_events(now, 1);
            drain_sockets();
        }
    }
    free(members);
    free(slot_start);
    free(scratch);
    for (int c = 0; c < cycle_count; c++)
        free(cycles[c].frames);
    free(cycles);
    free(recent);
    free(windows);
    free(legs);
    close(epoll_fd);
    return 0;
}
