/* The native forwarding plane: passthrough RTP received and sent without entering Python.
 *
 * A Plane owns an epoll set of UDP sockets (the RTP sockets of plain RTP endpoints). The
 * engine programs it with rules, per socket:
 *   - a sender rule: this socket sends passthrough packets with its own SSRC, sequence numbers
 *     and a timestamp offset to one target address;
 *   - a receiver rule: packets from the latched source address with the known SSRC and a
 *     mapped payload type are accounted (RFC 3550 A.1 sequence and A.8 jitter, as the Python
 *     twin does) and rewritten to every destination socket whose sender rule is armed.
 * Everything else (RTCP, events, other sources, sequence jumps, unarmed sockets) is handed up,
 * in arrival order, to the `slow(fd, data, address)` callable. `disarm_*` returns the state so
 * that Python continues exactly where the plane stopped. The GIL is released around the
 * receive and send system calls (recvmmsg, sendmmsg).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32          /* datagrams per recvmmsg */
#define ROUNDS 4          /* recvmmsg calls per ready socket and run */
#define EVENTS 256        /* ready sockets per epoll_wait */
#define DATAGRAM 65536    /* any UDP datagram fits */
#define MAX_DESTINATIONS 16
#define HEADER 12
#define NO_TYPE 0xFF
#define OUTGOING (BATCH * MAX_DESTINATIONS)
#define MAX_DROPOUT 3000
#define MAX_MISORDER 100

typedef struct {
    int fd;
    uint64_t generation;
    uint8_t types[128]; /* source payload type -> destination payload type, NO_TYPE: none */
} Destination;

typedef struct {
    uint64_t generation; /* 0: not registered */
    /* sender rule */
    int sending;
    struct sockaddr_storage target;
    socklen_t target_length;
    uint32_t ssrc, offset, last_timestamp;
    uint16_t sequence;
    unsigned long long sent_packets, sent_bytes, routed;
    unsigned long long errors; /* failed sends and receive errors (ICMP), any rules */
    double last_time;
    /* receiver rule */
    int receiving;
    struct sockaddr_storage source;
    socklen_t source_length;
    uint32_t remote_ssrc, previous_timestamp;
    double clock_rate, jitter, previous_arrival, last_received;
    int has_previous;
    long max_sequence;
    unsigned long long cycles, received, received_packets, received_bytes;
    int destination_count;
    Destination destinations[MAX_DESTINATIONS];
} Link;

typedef struct {
    PyObject_HEAD
    int epoll_fd;
    PyObject *slow;
    Link *links;
    int link_count;
    uint64_t generations;
    uint8_t *buffers;
    struct mmsghdr incoming[BATCH];
    struct iovec incoming_parts[BATCH];
    struct sockaddr_storage sources[BATCH];
    /* what the current batch forwards: sendmmsg takes runs of one descriptor */
    struct mmsghdr outgoing[OUTGOING];
    struct iovec outgoing_parts[OUTGOING][2];
    uint8_t outgoing_headers[OUTGOING][HEADER];
    int outgoing_fds[OUTGOING];
    int outgoing_count;
} Plane;

static double monotonic_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

static uint16_t read16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static uint32_t read32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void write16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }

static void write32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static Link *link_of(Plane *self, int fd) {
    if (fd < 0 || fd >= self->link_count || self->links[fd].generation == 0) return NULL;
    return &self->links[fd];
}

static Link *registered(Plane *self, int fd) {
    Link *link = link_of(self, fd);
    if (link == NULL) PyErr_Format(PyExc_KeyError, "socket %d is not in the plane", fd);
    return link;
}

/* (host, port) or (host, port, flowinfo, scope_id) -> sockaddr; 0 when it is no IP literal. */
static int parse_address(PyObject *address, struct sockaddr_storage *out, socklen_t *length) {
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    if (!PyTuple_Check(address)) {
        PyErr_SetString(PyExc_TypeError, "an address is a (host, port) tuple");
        return -1;
    }
    if (!PyArg_ParseTuple(address, "si|II", &host, &port, &flowinfo, &scope_id)) return -1;
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *length = sizeof(*v4);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        v6->sin6_flowinfo = htonl(flowinfo);
        v6->sin6_scope_id = scope_id;
        *length = sizeof(*v6);
        return 1;
    }
    return 0;
}

static int same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               x->sin6_flowinfo == y->sin6_flowinfo &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

/* The address as Python's socket module reports it. */
static PyObject *address_object(const struct sockaddr_storage *address) {
    char host[INET6_ADDRSTRLEN];
    if (address->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const void *)address;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(v4->sin_port));
    }
    if (address->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const void *)address;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(v6->sin6_port), ntohl(v6->sin6_flowinfo),
                             v6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------- lifecycle */

static int Plane_init(Plane *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"slow", NULL};
    PyObject *slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", names, &slow)) return -1;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return -1;
    }
    if (self->epoll_fd >= 0) {
        PyErr_SetString(PyExc_RuntimeError, "the plane is already initialised");
        return -1;
    }
    self->buffers = PyMem_Malloc((size_t)BATCH * DATAGRAM);
    if (self->buffers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epoll_fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    for (int i = 0; i < BATCH; i++) {
        self->incoming_parts[i].iov_base = self->buffers + (size_t)i * DATAGRAM;
        self->incoming_parts[i].iov_len = DATAGRAM;
    }
    Py_INCREF(slow);
    self->slow = slow;
    return 0;
}

static PyObject *Plane_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    Plane *self = (Plane *)type->tp_alloc(type, 0);
    if (self != NULL) self->epoll_fd = -1;
    return (PyObject *)self;
}

static void Plane_dealloc(Plane *self) {
    if (self->epoll_fd >= 0) close(self->epoll_fd);
    Py_XDECREF(self->slow);
    PyMem_Free(self->links);
    PyMem_Free(self->buffers);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Plane_close(Plane *self, PyObject *unused) {
    if (self->epoll_fd >= 0) close(self->epoll_fd);
    self->epoll_fd = -1;
    Py_RETURN_NONE;
}

static PyObject *Plane_fileno(Plane *self, PyObject *unused) { return PyLong_FromLong(self->epoll_fd); }

static PyObject *Plane_add(Plane *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    if (fd < 0 || self->epoll_fd < 0) {
        PyErr_SetString(PyExc_ValueError, "a socket descriptor and an open plane are needed");
        return NULL;
    }
    if (fd >= self->link_count) {
        int count = fd + 64;
        Link *links = PyMem_Realloc(self->links, (size_t)count * sizeof(Link));
        if (links == NULL) return PyErr_NoMemory();
        memset(links + self->link_count, 0, (size_t)(count - self->link_count) * sizeof(Link));
        self->links = links;
        self->link_count = count;
    }
    if (self->links[fd].generation != 0) {
        PyErr_Format(PyExc_ValueError, "socket %d is already in the plane", fd);
        return NULL;
    }
    struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(self->epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    memset(&self->links[fd], 0, sizeof(Link));
    self->links[fd].generation = ++self->generations;
    Py_RETURN_NONE;
}

static PyObject *Plane_remove(Plane *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Link *link = link_of(self, fd);
    if (link != NULL) {
        if (self->epoll_fd >= 0) epoll_ctl(self->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
        memset(link, 0, sizeof(Link));
    }
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------- rules */

static PyObject *Plane_arm_sender(Plane *self, PyObject *args) {
    int fd;
    PyObject *target;
    unsigned long long ssrc, sequence, packets, bytes, offset, last_timestamp;
    double last_time;
    if (!PyArg_ParseTuple(args, "iOKKKKKKd", &fd, &target, &ssrc, &sequence, &packets, &bytes,
                          &offset, &last_timestamp, &last_time))
        return NULL;
    Link *link = registered(self, fd);
    if (link == NULL) return NULL;
    int parsed = parse_address(target, &link->target, &link->target_length);
    if (parsed < 0) return NULL;
    if (parsed == 0) Py_RETURN_FALSE;
    link->ssrc = (uint32_t)ssrc;
    link->sequence = (uint16_t)sequence;
    link->sent_packets = packets;
    link->sent_bytes = bytes;
    link->offset = (uint32_t)offset;
    link->last_timestamp = (uint32_t)last_timestamp;
    link->last_time = last_time;
    link->routed = 0;
    link->sending = 1;
    Py_RETURN_TRUE;
}

static PyObject *Plane_disarm_sender(Plane *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Link *link = link_of(self, fd);
    if (link == NULL || !link->sending) Py_RETURN_NONE;
    link->sending = 0;
    return Py_BuildValue("(IKKIdK)", (unsigned int)link->sequence, link->sent_packets,
                         link->sent_bytes, link->last_timestamp, link->last_time, link->routed);
}

/* What the rules did since the last call, without taking them back: cheap enough for a
 * once-a-second look at every socket. */
static PyObject *Plane_progress(Plane *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Link *link = link_of(self, fd);
    if (link == NULL) Py_RETURN_NONE;
    unsigned long long routed = link->routed;
    link->routed = 0;
    if (!link->receiving) return Py_BuildValue("(KO)", routed, Py_None);
    return Py_BuildValue("(Kd)", routed, link->last_received);
}

static PyObject *Plane_take_errors(Plane *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Link *link = link_of(self, fd);
    unsigned long long errors = 0;
    if (link != NULL) {
        errors = link->errors;
        link->errors = 0;
    }
    return PyLong_FromUnsignedLongLong(errors);
}

static PyObject *Plane_arm_receiver(Plane *self, PyObject *args) {
    int fd;
    PyObject *source, *previous_arrival, *destinations;
    unsigned long long remote_ssrc, max_sequence, cycles, received, previous_timestamp;
    unsigned long long packets, bytes;
    double clock_rate, jitter, last_received;
    if (!PyArg_ParseTuple(args, "iOKdKKKdOKKKdO", &fd, &source, &remote_ssrc, &clock_rate,
                          &max_sequence, &cycles, &received, &jitter, &previous_arrival,
                          &previous_timestamp, &packets, &bytes, &last_received, &destinations))
        return NULL;
    Link *link = registered(self, fd);
    if (link == NULL) return NULL;
    if (!PyList_Check(destinations) || clock_rate <= 0) {
        PyErr_SetString(PyExc_TypeError, "destinations must be a list, clock_rate positive");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(destinations);
    if (count < 1 || count > MAX_DESTINATIONS) Py_RETURN_FALSE;
    Destination parsed_destinations[MAX_DESTINATIONS];
    for (Py_ssize_t i = 0; i < count; i++) {
        int destination_fd;
        const char *types;
        Py_ssize_t types_length;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(destinations, i), "iy#", &destination_fd, &types,
                              &types_length))
            return NULL;
        Link *destination = link_of(self, destination_fd);
        if (types_length != 128) {
            PyErr_SetString(PyExc_ValueError, "a payload type map is 128 bytes");
            return NULL;
        }
        if (destination == NULL || !destination->sending) Py_RETURN_FALSE;
        parsed_destinations[i].fd = destination_fd;
        parsed_destinations[i].generation = destination->generation;
        memcpy(parsed_destinations[i].types, types, 128);
    }
    double previous = 0.0;
    int has_previous = previous_arrival != Py_None;
    if (has_previous) {
        previous = PyFloat_AsDouble(previous_arrival);
        if (previous == -1.0 && PyErr_Occurred()) return NULL;
    }
    int parsed = parse_address(source, &link->source, &link->source_length);
    if (parsed < 0) return NULL;
    if (parsed == 0) Py_RETURN_FALSE;
    link->remote_ssrc = (uint32_t)remote_ssrc;
    link->clock_rate = clock_rate;
    link->max_sequence = (long)max_sequence;
    link->cycles = cycles;
    link->received = received;
    link->jitter = jitter;
    link->has_previous = has_previous;
    link->previous_arrival = previous;
    link->previous_timestamp = (uint32_t)previous_timestamp;
    link->received_packets = packets;
    link->received_bytes = bytes;
    link->last_received = last_received;
    link->destination_count = (int)count;
    memcpy(link->destinations, parsed_destinations, (size_t)count * sizeof(Destination));
    link->receiving = 1;
    Py_RETURN_TRUE;
}

static PyObject *Plane_disarm_receiver(Plane *self, PyObject *arg) {
    int fd = PyLong_AsLong(arg);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Link *link = link_of(self, fd);
    if (link == NULL || !link->receiving) Py_RETURN_NONE;
    link->receiving = 0;
    PyObject *previous = link->has_previous ? PyFloat_FromDouble(link->previous_arrival) : Py_NewRef(Py_None);
    if (previous == NULL) return NULL;
    return Py_BuildValue("(lKKdNIKKd)", link->max_sequence, link->cycles, link->received,
                         link->jitter, previous, link->previous_timestamp, link->received_packets,
                         link->received_bytes, link->last_received);
}

/* ---------------------------------------------------------------------------- data path */

static void flush(Plane *self) {
    int start = 0, end = self->outgoing_count;
    self->outgoing_count = 0;
    while (start < end) {
        int fd = self->outgoing_fds[start], stop = start + 1;
        while (stop < end && self->outgoing_fds[stop] == fd) stop++;
        int sent;
        Py_BEGIN_ALLOW_THREADS
        sent = sendmmsg(fd, &self->outgoing[start], (unsigned int)(stop - start), MSG_DONTWAIT);
        Py_END_ALLOW_THREADS
        Link *link = link_of(self, fd);
        if (sent < 0) {
            if (link != NULL) link->errors++;
            start++;
        } else {
            start += sent > 0 ? sent : 1;
            if (sent == 0 && link != NULL) link->errors++;
        }
    }
}

/* One datagram that the receiver rule of `link` may take: 1 when forwarded, 0 to hand it up. */
static int forward(Plane *self, Link *link, uint8_t *data, size_t length) {
    if (length < HEADER || data[0] != 0x80) return 0;
    uint8_t payload_type = data[1] & 0x7F, marker = data[1] & 0x80;
    if (payload_type >= 64 && payload_type <= 95) return 0; /* RTCP under rtcp-mux */
    if (read32(data + 8) != link->remote_ssrc) return 0;
    int mapped = 0;
    for (int i = 0; i < link->destination_count; i++) {
        Destination *destination = &link->destinations[i];
        if (destination->types[payload_type] == NO_TYPE) continue;
        Link *sender = link_of(self, destination->fd);
        if (sender == NULL || sender->generation != destination->generation || !sender->sending)
            return 0;
        mapped = 1;
    }
    if (!mapped) return 0;
    uint16_t sequence = read16(data + 2);
    unsigned long step = ((unsigned long)sequence - (unsigned long)link->max_sequence) & 0xFFFF;
    if (step >= MAX_DROPOUT && step <= 0x10000 - MAX_MISORDER) return 0; /* a jump: Python decides */
    double now = monotonic_now();
    uint32_t timestamp = read32(data + 4);
    if (step < MAX_DROPOUT) {
        if (sequence < link->max_sequence) link->cycles += 0x10000;
        link->max_sequence = sequence;
    }
    link->received++;
    if (link->has_previous) {
        double elapsed = (now - link->previous_arrival) * link->clock_rate;
        double advanced = (double)(int32_t)(timestamp - link->previous_timestamp);
        link->jitter += (fabs(elapsed - advanced) - link->jitter) / 16.0;
    }
    link->has_previous = 1;
    link->previous_arrival = now;
    link->previous_timestamp = timestamp;
    size_t payload_length = length - HEADER;
    link->received_packets++;
    link->received_bytes += payload_length;
    link->last_received = now;
    for (int i = 0; i < link->destination_count; i++) {
        Destination *destination = &link->destinations[i];
        uint8_t type = destination->types[payload_type];
        if (type == NO_TYPE) continue;
        Link *sender = &self->links[destination->fd];
        uint32_t out_timestamp = timestamp + sender->offset;
        int slot = self->outgoing_count++;
        uint8_t *header = self->outgoing_headers[slot];
        header[0] = 0x80;
        header[1] = type | marker;
        write16(header + 2, sender->sequence++);
        write32(header + 4, out_timestamp);
        write32(header + 8, sender->ssrc);
        struct iovec *parts = self->outgoing_parts[slot];
        parts[0].iov_base = header;
        parts[0].iov_len = HEADER;
        parts[1].iov_base = data + HEADER;
        parts[1].iov_len = payload_length;
        struct msghdr *message = &self->outgoing[slot].msg_hdr;
        memset(message, 0, sizeof(*message));
        message->msg_name = &sender->target;
        message->msg_namelen = sender->target_length;
        message->msg_iov = parts;
        message->msg_iovlen = 2;
        self->outgoing_fds[slot] = destination->fd;
        sender->sent_packets++;
        sender->sent_bytes += payload_length;
        sender->last_timestamp = out_timestamp;
        sender->last_time = now;
        sender->routed++;
    }
    return 1;
}

static int hand_up(Plane *self, int fd, const uint8_t *data, size_t length,
                   const struct sockaddr_storage *source) {
    flush(self);
    PyObject *address = address_object(source);
    if (address == NULL) return -1;
    PyObject *result = PyObject_CallFunction(self->slow, "iy#N", fd, (const char *)data,
                                             (Py_ssize_t)length, address);
    if (result == NULL) return -1;
    Py_DECREF(result);
    return 0;
}

/* One recvmmsg on `fd` and what it brought: the number received, or -1 on a Python error. */
static int drain(Plane *self, int fd, uint64_t generation) {
    for (int i = 0; i < BATCH; i++) {
        memset(&self->incoming[i].msg_hdr, 0, sizeof(struct msghdr));
        self->incoming[i].msg_hdr.msg_iov = &self->incoming_parts[i];
        self->incoming[i].msg_hdr.msg_iovlen = 1;
        self->incoming[i].msg_hdr.msg_name = &self->sources[i];
        self->incoming[i].msg_hdr.msg_namelen = sizeof(self->sources[i]);
    }
    int received;
    Py_BEGIN_ALLOW_THREADS
    received = recvmmsg(fd, self->incoming, BATCH, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (received < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        Link *link = link_of(self, fd); /* an ICMP error reported on the socket */
        if (link != NULL) link->errors++;
    }
    if (received <= 0) return 0;
    for (int i = 0; i < received; i++) {
        Link *link = link_of(self, fd);
        if (link == NULL || link->generation != generation) return received; /* removed */
        uint8_t *data = self->incoming_parts[i].iov_base;
        size_t length = self->incoming[i].msg_len;
        if (link->receiving && same_address(&self->sources[i], &link->source) &&
            forward(self, link, data, length))
            continue;
        if (hand_up(self, fd, data, length, &self->sources[i]) < 0) return -1;
    }
    flush(self);
    return received;
}

static PyObject *Plane_run(Plane *self, PyObject *unused) {
    if (self->epoll_fd < 0) Py_RETURN_NONE;
    struct epoll_event events[EVENTS];
    int ready;
    Py_BEGIN_ALLOW_THREADS
    ready = epoll_wait(self->epoll_fd, events, EVENTS, 0);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < ready; i++) {
        int fd = events[i].data.fd;
        Link *link = link_of(self, fd);
        if (link == NULL) continue;
        uint64_t generation = link->generation;
        for (int round = 0; round < ROUNDS; round++) {
            int received = drain(self, fd, generation);
            if (received < 0) {
                flush(self);
                return NULL;
            }
            if (received < BATCH) break;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef Plane_methods[] = {
    {"fileno", (PyCFunction)Plane_fileno, METH_NOARGS, "The epoll descriptor: readable when a socket is."},
    {"close", (PyCFunction)Plane_close, METH_NOARGS, "Close the epoll descriptor (not the sockets)."},
    {"add", (PyCFunction)Plane_add, METH_O, "add(fd): receive on this UDP socket."},
    {"remove", (PyCFunction)Plane_remove, METH_O, "remove(fd): forget the socket and its rules."},
    {"arm_sender", (PyCFunction)Plane_arm_sender, METH_VARARGS,
     "arm_sender(fd, target, ssrc, sequence, sent_packets, sent_bytes, offset, last_timestamp,"
     " last_time) -> bool"},
    {"disarm_sender", (PyCFunction)Plane_disarm_sender, METH_O,
     "disarm_sender(fd) -> (sequence, sent_packets, sent_bytes, last_timestamp, last_time,"
     " routed) or None"},
    {"progress", (PyCFunction)Plane_progress, METH_O,
     "progress(fd) -> (packets sent since the last call, last_received or None)"},
    {"take_errors", (PyCFunction)Plane_take_errors, METH_O,
     "take_errors(fd) -> socket errors (failed sends, ICMP errors) since the last call"},
    {"arm_receiver", (PyCFunction)Plane_arm_receiver, METH_VARARGS,
     "arm_receiver(fd, source, remote_ssrc, clock_rate, max_sequence, cycles, received, jitter,"
     " previous_arrival, previous_timestamp, received_packets, received_bytes, last_received,"
     " [(destination_fd, 128-byte payload type map)]) -> bool"},
    {"disarm_receiver", (PyCFunction)Plane_disarm_receiver, METH_O,
     "disarm_receiver(fd) -> (max_sequence, cycles, received, jitter, previous_arrival,"
     " previous_timestamp, received_packets, received_bytes, last_received) or None"},
    {"run", (PyCFunction)Plane_run, METH_NOARGS, "Receive what is ready; forward or hand up."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "callbridge.engine._forward.Plane",
    .tp_basicsize = sizeof(Plane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Plane(slow): the native forwarding plane of one event loop.",
    .tp_new = Plane_new,
    .tp_init = (initproc)Plane_init,
    .tp_dealloc = (destructor)Plane_dealloc,
    .tp_methods = Plane_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_forward", "The native forwarding plane of RTP passthrough.", -1, NULL,
};

PyMODINIT_FUNC PyInit__forward(void) {
    if (PyType_Ready(&PlaneType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&PlaneType);
    if (PyModule_AddObject(m, "Plane", (PyObject *)&PlaneType) < 0) {
        Py_DECREF(&PlaneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
