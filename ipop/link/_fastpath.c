/* ipop.link._fastpath: seal and open runs of DATA datagrams for one established key; the
 * TAP's TCP byte work (a batch's segments coalesced for a write, ipop.vnet.gro; a read's batch
 * cut or its checksum finished, ipop.vnet.offload); and the lane, a thread that moves lone
 * packets between the TAP and the UDP socket without the GIL (ipop.link.lane).
 *
 * The native twins of ipop.link.fastpath.PyBatchAead, ipop.link.replay.ReplayWindow and
 * ipop.link.lane.PyLane (read those modules first: they are the definitions). A BatchAead
 * holds one direction's key (an OpenSSL EVP context) and its send counter; a Window, one
 * key's replay window. Python's link layer and the lane's thread seal and open with the same
 * objects, each under the object's lock, so every counter and window has one owner.
 * Wire format (ipop.wire.header): 0xC3 | receiver_index (4, BE) | counter (8, BE) | AEAD
 * ciphertext | 16-byte tag; nonce = 4 zero bytes || counter (BE); AAD = the 13-byte header.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define TYPE_DATA 0xC3
#define HDR 13
#define TAG 16
#define KEY 32
#define CIPHER_AES_256_GCM 1
#define CIPHER_CHACHA20_POLY1305 2

/* The drop reasons, as ipop.link.replay and ipop.link.config name them (interned once). */
static PyObject *R_EXPIRED, *R_TOO_OLD, *R_REPLAY, *R_AUTH;

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    /* The send counter (take(): atomic, as the lane's thread takes from it too) and the lock
     * that keeps the lane's thread and Python's seal() off the one EVP context at once. */
    uint64_t counter;
    pthread_mutex_t lock;
} BatchAead;

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static void put_be64(unsigned char *p, uint64_t v) {
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint32_t get_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t get_be64(const unsigned char *p) {
    return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

static void nonce_of(unsigned char nonce[12], uint64_t counter) {
    memset(nonce, 0, 4);
    put_be64(nonce + 4, counter);
}

/* "O&" converter: a Python int in 0 .. 2**64 - 1, else OverflowError/TypeError (as the
 * twin's struct packing refuses it), never silently wrapped. */
static int to_u64(PyObject *obj, void *out) {
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return 0;
    *(unsigned long long *)out = v;
    return 1;
}

static int BatchAead_init(BatchAead *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"cipher_id", "key", NULL};
    int cipher_id;
    Py_buffer key;
    const EVP_CIPHER *cipher;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iy*", kwlist, &cipher_id, &key))
        return -1;
    if (key.len != KEY) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "AEAD key must be 32 bytes");
        return -1;
    }
    if (cipher_id == CIPHER_AES_256_GCM)
        cipher = EVP_aes_256_gcm();
    else if (cipher_id == CIPHER_CHACHA20_POLY1305)
        cipher = EVP_chacha20_poly1305();
    else {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "unknown cipher id");
        return -1;
    }
    if (self->enc == NULL) self->enc = EVP_CIPHER_CTX_new();
    if (self->dec == NULL) self->dec = EVP_CIPHER_CTX_new();
    /* The key schedule runs once here; each packet only sets its nonce. */
    int ok = self->enc != NULL && self->dec != NULL &&
             EVP_EncryptInit_ex(self->enc, cipher, NULL, key.buf, NULL) == 1 &&
             EVP_DecryptInit_ex(self->dec, cipher, NULL, key.buf, NULL) == 1;
    PyBuffer_Release(&key);
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "EVP cipher setup failed");
        return -1;
    }
    return 0;
}

static PyObject *BatchAead_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    BatchAead *self = (BatchAead *)PyType_GenericNew(type, args, kwds);
    if (self != NULL) pthread_mutex_init(&self->lock, NULL);
    return (PyObject *)self;
}

static void BatchAead_dealloc(BatchAead *self) {
    EVP_CIPHER_CTX_free(self->enc); /* frees and cleanses the key schedule */
    EVP_CIPHER_CTX_free(self->dec);
    pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* take(n): the first of n counters, reserved (PyBatchAead.take). The counter only moves
 * under the lock, so whoever reads it there and seals before unlocking owns what it read. */
static PyObject *BatchAead_take(BatchAead *self, PyObject *arg) {
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    pthread_mutex_lock(&self->lock);
    uint64_t first = self->counter;
    int ok = first <= UINT64_MAX - n;
    if (ok) __atomic_store_n(&self->counter, first + n, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&self->lock);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "counter out of range");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(first);
}

static PyObject *BatchAead_get_counter(BatchAead *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->counter, __ATOMIC_RELAXED));
}

/* One datagram: header + encrypt(head + body) + tag. New reference, or NULL with an exception. */
static PyObject *seal_one(BatchAead *self, uint32_t index, uint64_t counter, const Py_buffer *head,
                          const unsigned char *body, Py_ssize_t blen) {
    unsigned char nonce[12];
    int len;
    if (blen > INT_MAX - HDR - TAG - head->len) {
        PyErr_SetString(PyExc_ValueError, "payload too large");
        return NULL;
    }
    Py_ssize_t plen = head->len + blen;
    PyObject *out = PyBytes_FromStringAndSize(NULL, HDR + plen + TAG);
    if (out == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    o[0] = TYPE_DATA;
    put_be32(o + 1, index);
    put_be64(o + 5, counter);
    nonce_of(nonce, counter);
    int ok = EVP_EncryptInit_ex(self->enc, NULL, NULL, NULL, nonce) == 1 &&
             EVP_EncryptUpdate(self->enc, NULL, &len, o, HDR) == 1 &&
             (head->len == 0 || EVP_EncryptUpdate(self->enc, o + HDR, &len, head->buf,
                                                  (int)head->len) == 1) &&
             EVP_EncryptUpdate(self->enc, o + HDR + head->len, &len, body, (int)blen) == 1 &&
             EVP_EncryptFinal_ex(self->enc, o + HDR + plen, &len) == 1 &&
             EVP_CIPHER_CTX_ctrl(self->enc, EVP_CTRL_AEAD_GET_TAG, TAG, o + HDR + plen) == 1;
    if (!ok) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "EVP encryption failed");
        return NULL;
    }
    return out;
}

/* seal(index, counter, payloads, head=b"", strip=b""): each payload sealed as head + what
 * follows strip in it; the run stops at the first payload that does not start with strip or
 * has nothing after it (strip non-empty: PyBatchAead.seal). */
static PyObject *seal_impl(BatchAead *self, unsigned long long index, unsigned long long counter,
                           int next, PyObject *payloads, Py_buffer head, Py_buffer strip) {
    PyObject *seq = NULL, *out = NULL;
    if (index > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "index out of range");
        goto done;
    }
    seq = PySequence_Fast(payloads, "payloads must be a sequence");
    if (seq == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    out = PyList_New(0);
    if (out == NULL) goto done;
    pthread_mutex_lock(&self->lock);
    if (next) counter = self->counter;
    if (n > 0 && counter > UINT64_MAX - (uint64_t)(n - 1)) {
        PyErr_SetString(PyExc_ValueError, "counter out of range");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer pt;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &pt, PyBUF_SIMPLE) < 0) goto fail;
        const unsigned char *p = (const unsigned char *)pt.buf;
        if (strip.len > 0 && (pt.len <= strip.len || memcmp(p, strip.buf, (size_t)strip.len))) {
            PyBuffer_Release(&pt);
            break; /* not this run's: the caller's */
        }
        PyObject *d = seal_one(self, (uint32_t)index, counter + (uint64_t)i, &head,
                               p + strip.len, pt.len - strip.len);
        PyBuffer_Release(&pt);
        if (d == NULL) goto fail;
        int rc = PyList_Append(out, d);
        Py_DECREF(d);
        if (rc < 0) goto fail;
    }
    if (next) __atomic_store_n(&self->counter, counter + (uint64_t)PyList_GET_SIZE(out),
                               __ATOMIC_RELAXED);
    pthread_mutex_unlock(&self->lock);
    goto done;
fail:
    pthread_mutex_unlock(&self->lock);
    Py_CLEAR(out);
done:
    Py_XDECREF(seq);
    return out;
}

static PyObject *BatchAead_seal(BatchAead *self, PyObject *args) {
    unsigned long long index, counter;
    PyObject *payloads;
    Py_buffer head = {0}, strip = {0};
    if (!PyArg_ParseTuple(args, "O&O&O|y*y*", to_u64, &index, to_u64, &counter, &payloads, &head,
                          &strip))
        return NULL;
    PyObject *out = seal_impl(self, index, counter, 0, payloads, head, strip);
    if (head.obj != NULL) PyBuffer_Release(&head);
    if (strip.obj != NULL) PyBuffer_Release(&strip);
    return out;
}

/* seal_next(index, payloads, head=b"", strip=b""): seal() from the key's own counter, which
 * advances by the number sealed (PyBatchAead.seal_next). */
static PyObject *BatchAead_seal_next(BatchAead *self, PyObject *args) {
    unsigned long long index;
    PyObject *payloads;
    Py_buffer head = {0}, strip = {0};
    if (!PyArg_ParseTuple(args, "O&O|y*y*", to_u64, &index, &payloads, &head, &strip))
        return NULL;
    PyObject *out = seal_impl(self, index, 0, 1, payloads, head, strip);
    if (head.obj != NULL) PyBuffer_Release(&head);
    if (strip.obj != NULL) PyBuffer_Release(&strip);
    return out;
}

/* Decrypt d (len n >= HDR + TAG) into a new bytes object; NULL without exception: forged. */
static PyObject *open_one(BatchAead *self, const unsigned char *d, Py_ssize_t n, uint64_t counter,
                          int *failed) {
    unsigned char nonce[12];
    unsigned char tag[TAG];
    int len;
    Py_ssize_t clen = n - HDR - TAG;
    *failed = 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, clen);
    if (out == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(tag, d + n - TAG, TAG);
    nonce_of(nonce, counter);
    int ok = EVP_DecryptInit_ex(self->dec, NULL, NULL, NULL, nonce) == 1 &&
             EVP_DecryptUpdate(self->dec, NULL, &len, d, HDR) == 1 &&
             EVP_DecryptUpdate(self->dec, o, &len, d + HDR, (int)clen) == 1 &&
             EVP_CIPHER_CTX_ctrl(self->dec, EVP_CTRL_AEAD_SET_TAG, TAG, tag) == 1 &&
             EVP_DecryptFinal_ex(self->dec, o + len, &len) == 1;
    if (!ok) {
        OPENSSL_cleanse(o, (size_t)clen); /* never hand out unauthenticated plaintext */
        Py_DECREF(out);
        *failed = 1;
        return NULL;
    }
    return out;
}

/* ReplayWindow.reject_reason: NULL if counter may be accepted, else the reason. */
static PyObject *window_reason(const unsigned char *seen, uint64_t width, int64_t top,
                               uint64_t counter) {
    if (top < 0 || counter > (uint64_t)top) return NULL;
    if ((uint64_t)top - counter >= width) return R_TOO_OLD;
    if (seen[counter % width]) return R_REPLAY;
    return NULL;
}

/* ReplayWindow.accept, for a counter window_reason let through. */
static void window_accept(unsigned char *seen, uint64_t width, int64_t *top, uint64_t counter) {
    if (*top < 0 || counter > (uint64_t)*top) {
        uint64_t n = *top < 0 ? counter + 1 : counter - (uint64_t)*top;
        if (n >= width) {
            memset(seen, 0, (size_t)width);
        } else if (n > 1) {
            uint64_t start = (uint64_t)(*top + 1) % width;
            uint64_t end = start + n;
            if (end <= width) {
                memset(seen + start, 0, (size_t)n);
            } else {
                memset(seen + start, 0, (size_t)(width - start));
                memset(seen, 0, (size_t)(end - width));
            }
        }
        *top = (int64_t)counter;
    }
    seen[counter % width] = 1;
}

/* Window: the native twin of ipop.link.replay.ReplayWindow (its docstring: the rules), for
 * the native backend's keys, whose windows the lane's thread checks and marks too: every
 * check-and-mark holds the lock, so a counter is accepted once whichever thread opens it. */
typedef struct {
    PyObject_HEAD
    unsigned char *seen;
    uint64_t width;
    int64_t top;
    pthread_mutex_t lock;
} Window;

static PyTypeObject WindowType;

static int Window_init(Window *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"width", NULL};
    Py_ssize_t width;
    if (self->seen != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Window is made once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n", kwlist, &width)) return -1;
    if (width < 1 || width > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "replay window width must be >= 1");
        return -1;
    }
    self->seen = PyMem_RawCalloc((size_t)width, 1);
    if (self->seen == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->width = (uint64_t)width;
    self->top = -1;
    pthread_mutex_init(&self->lock, NULL);
    return 0;
}

static void Window_dealloc(Window *self) {
    if (self->seen != NULL) {
        PyMem_RawFree(self->seen);
        pthread_mutex_destroy(&self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* reject_reason(counter); take(counter): the same, and the counter marked if None, as one
 * step (ReplayWindow.take). */
static PyObject *window_op(Window *self, PyObject *arg, int mark) {
    unsigned long long c = PyLong_AsUnsignedLongLong(arg);
    if (c == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    if (self->seen == NULL) return PyErr_Format(PyExc_RuntimeError, "Window not initialised");
    pthread_mutex_lock(&self->lock);
    PyObject *r = window_reason(self->seen, self->width, self->top, c);
    if (r == NULL && mark) window_accept(self->seen, self->width, &self->top, c);
    pthread_mutex_unlock(&self->lock);
    return Py_NewRef(r == NULL ? Py_None : r);
}

static PyObject *Window_take(Window *self, PyObject *arg) { return window_op(self, arg, 1); }

static PyObject *Window_reject_reason(Window *self, PyObject *a) { return window_op(self, a, 0); }

static PyObject *Window_get_top(Window *self, void *Py_UNUSED(closure)) {
    pthread_mutex_lock(&self->lock);
    int64_t top = self->top;
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromLongLong(top);
}

static PyObject *Window_get_width(Window *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->width);
}

static PyObject *Window_get_seen(Window *self, void *Py_UNUSED(closure)) {
    pthread_mutex_lock(&self->lock);
    PyObject *b = PyByteArray_FromStringAndSize((const char *)self->seen, (Py_ssize_t)self->width);
    pthread_mutex_unlock(&self->lock);
    return b;
}

static PyMethodDef Window_methods[] = {
    {"take", (PyCFunction)Window_take, METH_O, "take(counter) -> None (accepted) | reason"},
    {"reject_reason", (PyCFunction)Window_reject_reason, METH_O, "reject_reason(counter)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Window_getset[] = {
    {"top", (getter)Window_get_top, NULL, "the highest counter accepted (-1: none)", NULL},
    {"width", (getter)Window_get_width, NULL, "the window's width", NULL},
    {"seen", (getter)Window_get_seen, NULL, "a copy of the slots", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WindowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipop.link._fastpath.Window",
    .tp_basicsize = sizeof(Window),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A key's replay window; see ipop.link.replay.ReplayWindow.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Window_init,
    .tp_dealloc = (destructor)Window_dealloc,
    .tp_methods = Window_methods,
    .tp_getset = Window_getset,
};

/* The run of datagrams[start:] that BatchAead_open takes (its arguments parsed). */
static PyObject *open_run(BatchAead *self, PyObject *datagrams, Py_ssize_t start,
                          unsigned long long index, unsigned long long limit, PyObject *window,
                          const Py_buffer *head) {
    if (!PyList_Check(datagrams)) {
        PyErr_SetString(PyExc_TypeError, "datagrams must be a list");
        return NULL;
    }
    if (index > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "index out of range");
        return NULL;
    }
    if (limit > (unsigned long long)INT64_MAX) {
        PyErr_SetString(PyExc_ValueError, "limit out of range");
        return NULL;
    }
    if (!PyObject_TypeCheck(window, &WindowType) || ((Window *)window)->seen == NULL) {
        PyErr_SetString(PyExc_TypeError, "window must be a _fastpath.Window");
        return NULL;
    }
    Window *w = (Window *)window;
    PyObject *results = PyList_New(0);
    if (results == NULL) return NULL;
    /* The lane's thread opens under these keys too: the context and the window are held for
     * the run (the same order as the lane: key, then window). */
    pthread_mutex_lock(&self->lock);
    pthread_mutex_lock(&w->lock);
    unsigned char *seen = w->seen;
    uint64_t width = w->width;
    Py_ssize_t n = PyList_GET_SIZE(datagrams);
    Py_ssize_t i = start < 0 ? 0 : start > n ? n : start;
    for (; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(datagrams, i);
        if (!PyBytes_Check(item)) break;
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(item);
        Py_ssize_t len = PyBytes_GET_SIZE(item);
        if (head->len > 0 && (len < head->len || memcmp(d, head->buf, (size_t)head->len))) break;
        d += head->len;
        len -= head->len;
        /* The run is DATA under this index only; anything else is the caller's. */
        if (len < HDR + TAG || d[0] != TYPE_DATA || get_be32(d + 1) != (uint32_t)index) break;
        uint64_t counter = get_be64(d + 5);
        PyObject *r;
        int failed = 0;
        if (counter >= limit) {
            r = R_EXPIRED;
            Py_INCREF(r);
        } else if ((r = window_reason(seen, width, w->top, counter)) != NULL) {
            Py_INCREF(r);
        } else {
            r = open_one(self, d, len, counter, &failed);
            if (r == NULL && !failed) goto error;
            if (failed) {
                r = R_AUTH;
                Py_INCREF(r);
            } else {
                window_accept(seen, width, &w->top, counter); /* only after the tag verified */
            }
        }
        int rc = PyList_Append(results, r);
        Py_DECREF(r);
        if (rc < 0) goto error;
    }
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("(nN)", i, results);
error:
    /* What was accepted stays accepted (never accepted twice). */
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_unlock(&self->lock);
    Py_DECREF(results);
    return NULL;
}

/* open(datagrams, start, index, limit, window, head=b""): each datagram taken is an element
 * that starts with head, the DATA datagram after it (PyBatchAead.open). */
static PyObject *BatchAead_open(BatchAead *self, PyObject *args) {
    PyObject *datagrams, *window;
    Py_ssize_t start;
    unsigned long long index, limit;
    Py_buffer head = {0};
    if (!PyArg_ParseTuple(args, "OnO&O&O|y*", &datagrams, &start, to_u64, &index, to_u64, &limit,
                          &window, &head))
        return NULL;
    PyObject *ret = open_run(self, datagrams, start, index, limit, window, &head);
    if (head.obj != NULL) PyBuffer_Release(&head);
    return ret;
}

static PyMethodDef BatchAead_methods[] = {
    {"seal", (PyCFunction)BatchAead_seal, METH_VARARGS,
     "seal(index, counter, payloads, head=b'', strip=b'') -> DATA datagrams, counters counter, "
     "counter+1..."},
    {"open", (PyCFunction)BatchAead_open, METH_VARARGS,
     "open(datagrams, start, index, limit, window, head=b'') -> (stop, results)"},
    {"seal_next", (PyCFunction)BatchAead_seal_next, METH_VARARGS,
     "seal_next(index, payloads, head=b'', strip=b''): seal() from the key's own counter"},
    {"take", (PyCFunction)BatchAead_take, METH_O, "take(n) -> the first of n send counters"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef BatchAead_getset[] = {
    {"counter", (getter)BatchAead_get_counter, NULL, "the next send counter", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchAeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipop.link._fastpath.BatchAead",
    .tp_basicsize = sizeof(BatchAead),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One direction's AEAD key; see ipop.link.fastpath.PyBatchAead.",
    .tp_new = BatchAead_new,
    .tp_init = (initproc)BatchAead_init,
    .tp_dealloc = (destructor)BatchAead_dealloc,
    .tp_methods = BatchAead_methods,
    .tp_getset = BatchAead_getset,
};

/* --- coalesce: the native twin of ipop.vnet.gro.coalesce (read its docstring: the rules) ----
 *
 * A batch's TCP segments of one flow, adjacent and in sequence, become one packet behind a
 * virtio header asking the kernel for GSO (GSO_TCPV4, NEEDS_CSUM); every other packet is
 * returned as it came, the very object, behind NO_GSO. Pure byte work, no state.
 */
#define IP_HLEN 20
#define ETH_HLEN 14
#define GRO_MAX_SEGMENTS 64
#define GRO_MAX_BYTES 65000
#define TCP_ACK 0x10
#define TCP_PSH 0x08

static PyObject *NO_GSO; /* the 10 zero bytes of a virtio header without GSO */

static unsigned get_be16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }

/* Checksums, kept modulo 0xFFFF (2**16 == 1) as ipop.vnet.offload and ipop.vnet.gro keep
 * them, so the fields come out bit for bit the same: sum_words adds the 16-bit big-endian
 * words of p[0:n] (an odd last byte is a word's high half); csum_field is the checksum field
 * for words summing to total (offload._csum); ones_sum the folded ones' complement sum itself
 * (0xFFFF for a nonzero multiple of it: a CHECKSUM_PARTIAL field). */
static uint64_t sum_words(const unsigned char *p, Py_ssize_t n) {
    uint64_t s = 0;
    Py_ssize_t i = 0;
    for (; i + 1 < n; i += 2) s += ((uint32_t)p[i] << 8) | p[i + 1];
    if (i < n) s += (uint32_t)p[i] << 8;
    return s;
}

static unsigned csum_field(uint64_t total) {
    unsigned s = (unsigned)(total % 0xFFFF);
    return s ? 0xFFFF - s : 0;
}

static unsigned ones_sum(uint64_t total) { return total ? 0xFFFF - csum_field(total) : 0; }

static void put_be16(unsigned char *p, unsigned v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* A packet that may be coalesced: IPv4 without options or fragmentation, TCP with ACK and
 * nothing but ACK and PSH, carrying data, its total length its buffer's (gro._segment). */
static int gro_segment(const unsigned char *p, Py_ssize_t n, Py_ssize_t *hlen, uint32_t *seq,
                       unsigned char *flags) {
    if (n < 34) return 0;
    Py_ssize_t total = (Py_ssize_t)get_be16(p + 2);
    Py_ssize_t thl = (Py_ssize_t)(p[32] >> 4) * 4;
    *flags = p[33];
    if (p[0] != 0x45 || p[9] != 6 || (get_be16(p + 6) & 0x3FFF) ||
        (*flags & (0xFF & ~TCP_PSH)) != TCP_ACK || total != n || thl < 20 ||
        total <= IP_HLEN + thl)
        return 0;
    *hlen = IP_HLEN + thl;
    *seq = get_be32(p + 24);
    return 1;
}

/* Do two hlen-byte IPv4 + TCP headers agree in all but total length, IP id and checksum,
 * sequence number, TCP flags and checksum (gro._flow_mask)? hlen >= 40. */
static int gro_same_flow(const unsigned char *a, const unsigned char *b, Py_ssize_t hlen) {
    return memcmp(a, b, 2) == 0 && memcmp(a + 6, b + 6, 4) == 0 &&
           memcmp(a + 12, b + 12, 12) == 0 && memcmp(a + 28, b + 28, 5) == 0 &&
           a[34] == b[34] && a[35] == b[35] && memcmp(a + 38, b + 38, (size_t)(hlen - 38)) == 0;
}

/* (virtio header, packet) for the count segments at bufs (gro._merged). */
static PyObject *gro_merged(const Py_buffer *bufs, Py_ssize_t count, Py_ssize_t hlen,
                            unsigned char psh) {
    Py_ssize_t total = hlen;
    for (Py_ssize_t k = 0; k < count; k++) total += bufs[k].len - hlen;
    PyObject *packet = PyBytes_FromStringAndSize(NULL, total);
    if (packet == NULL) return NULL;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(packet);
    memcpy(o, bufs[0].buf, (size_t)hlen);
    put_be16(o + 2, (unsigned)total);
    o[10] = o[11] = 0;
    put_be16(o + 10, csum_field(sum_words(o, IP_HLEN)));
    o[33] |= psh;
    /* CHECKSUM_PARTIAL: the pseudo-header's sum, folded, not complemented. */
    put_be16(o + 36, ones_sum(sum_words(o + 12, 8) + 6 + (uint64_t)(total - IP_HLEN)));
    unsigned char *at = o + hlen;
    for (Py_ssize_t k = 0; k < count; k++) {
        size_t len = (size_t)(bufs[k].len - hlen);
        memcpy(at, (const unsigned char *)bufs[k].buf + hlen, len);
        at += len;
    }
    /* struct virtio_net_hdr, host byte order: flags, gso_type, hdr_len, gso_size,
     * csum_start, csum_offset. */
    unsigned char vnet[10];
    uint16_t hdr_len = (uint16_t)(ETH_HLEN + hlen), gso_size = (uint16_t)(bufs[0].len - hlen);
    uint16_t csum_start = ETH_HLEN + IP_HLEN, csum_offset = 16;
    vnet[0] = 1; /* NEEDS_CSUM */
    vnet[1] = 1; /* GSO_TCPV4 */
    memcpy(vnet + 2, &hdr_len, 2);
    memcpy(vnet + 4, &gso_size, 2);
    memcpy(vnet + 6, &csum_start, 2);
    memcpy(vnet + 8, &csum_offset, 2);
    PyObject *v = PyBytes_FromStringAndSize((const char *)vnet, 10);
    if (v == NULL) {
        Py_DECREF(packet);
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, v, packet);
    Py_DECREF(v);
    Py_DECREF(packet);
    return pair;
}

static int gro_append(PyObject *out, PyObject *vnet, PyObject *packet) {
    PyObject *pair = PyTuple_Pack(2, vnet, packet);
    if (pair == NULL) return -1;
    int rc = PyList_Append(out, pair);
    Py_DECREF(pair);
    return rc;
}

static PyObject *fp_coalesce(PyObject *Py_UNUSED(module), PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "coalesce() takes a sequence of packets");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), got = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = NULL;
    Py_buffer *bufs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    if (bufs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; got < n; got++)
        if (PyObject_GetBuffer(items[got], &bufs[got], PyBUF_SIMPLE) < 0) goto done;
    out = PyList_New(0);
    if (out == NULL) goto done;
    Py_ssize_t i = 0;
    while (i < n) {
        const unsigned char *p = bufs[i].buf;
        Py_ssize_t start = i++, hlen = 0;
        uint32_t seqno = 0;
        unsigned char flags = 0, psh = 0;
        if (!gro_segment(p, bufs[start].len, &hlen, &seqno, &flags) || (flags & TCP_PSH)) {
            if (gro_append(out, NO_GSO, items[start]) < 0) goto fail;
            continue;
        }
        Py_ssize_t size = bufs[start].len - hlen, total = bufs[start].len, count = 1;
        uint32_t next = seqno + (uint32_t)size;
        while (i < n && count < GRO_MAX_SEGMENTS) {
            const unsigned char *q = bufs[i].buf;
            Py_ssize_t qlen = bufs[i].len, qsize = qlen - hlen;
            if (qsize > size || qsize <= 0 || total + qsize > GRO_MAX_BYTES) break;
            unsigned char qflags = q[33];
            if (get_be32(q + 24) != next || (Py_ssize_t)get_be16(q + 2) != qlen ||
                (qflags & (0xFF & ~TCP_PSH)) != TCP_ACK || !gro_same_flow(p, q, hlen))
                break;
            count++;
            total += qsize;
            next += (uint32_t)qsize;
            i++;
            psh = qflags & TCP_PSH;
            if (psh || qsize < size) break; /* a pushed or shorter segment ends the run */
        }
        if (count == 1) {
            if (gro_append(out, NO_GSO, items[start]) < 0) goto fail;
            continue;
        }
        PyObject *pair = gro_merged(bufs + start, count, hlen, psh);
        if (pair == NULL) goto fail;
        int rc = PyList_Append(out, pair);
        Py_DECREF(pair);
        if (rc < 0) goto fail;
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    if (bufs != NULL) {
        for (Py_ssize_t k = 0; k < got; k++) PyBuffer_Release(&bufs[k]);
        PyMem_Free(bufs);
    }
    Py_DECREF(seq);
    return out;
}

/* --- split_tcp and finish_frame: the native twins of ipop.vnet.offload's (read its
 * docstring: the rules). A frame the TAP hands over with offloads is a TCP batch of up to
 * 64 kB to cut into segments, or a packet whose TCP/UDP checksum is only begun.
 */
#define ETH_P_IP 0x0800
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

static PyObject *D_MALFORMED, *D_FRAGMENT, *D_PROTOCOL, *D_OVERSIZE;

/* offload._ipv4: header length, total length, protocol of the unfragmented IPv4 packet in
 * an Ethernet frame, or the drop reason (a borrowed, interned string). */
static PyObject *ipv4_of(const unsigned char *f, Py_ssize_t n, Py_ssize_t *ihl, Py_ssize_t *total,
                         int *proto) {
    if (n < ETH_HLEN + IP_HLEN || get_be16(f + 12) != ETH_P_IP) return D_PROTOCOL;
    unsigned char vihl = f[ETH_HLEN];
    *ihl = (Py_ssize_t)(vihl & 0x0F) * 4;
    *total = (Py_ssize_t)get_be16(f + ETH_HLEN + 2);
    *proto = f[ETH_HLEN + 9];
    if ((vihl >> 4) != 4 || *ihl < IP_HLEN || *total < *ihl || ETH_HLEN + *total > n)
        return D_MALFORMED;
    if (get_be16(f + ETH_HLEN + 6) & 0x3FFF) return D_FRAGMENT;
    return NULL;
}

static PyObject *fp_finish_frame(PyObject *Py_UNUSED(module), PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_WRITABLE) < 0) return NULL;
    unsigned char *f = b.buf;
    Py_ssize_t ihl = 0, total = 0;
    int proto = 0;
    PyObject *why = ipv4_of(f, b.len, &ihl, &total, &proto);
    if (why == NULL) {
        Py_ssize_t at = proto == IPPROTO_TCP_ ? 16 : 6, min_len = proto == IPPROTO_TCP_ ? 20 : 8;
        Py_ssize_t start = ETH_HLEN + ihl, end = ETH_HLEN + total;
        if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_)
            why = D_PROTOCOL;
        else if (end - start < min_len)
            why = D_MALFORMED;
        else {
            unsigned char *field = f + start + at;
            field[0] = field[1] = 0;
            uint64_t sum = sum_words(f + ETH_HLEN + 12, 8) + (uint64_t)proto +
                           (uint64_t)(end - start) + sum_words(f + start, end - start);
            unsigned c = csum_field(sum);
            if (c == 0 && proto == IPPROTO_UDP_) c = 0xFFFF; /* zero says "none" (RFC 768) */
            put_be16(field, c);
        }
    }
    PyBuffer_Release(&b);
    if (why == NULL) Py_RETURN_NONE;
    Py_INCREF(why);
    return why;
}

static PyObject *fp_split_tcp(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"frame", "mtu", "mss", "lead", NULL};
    Py_buffer b = {0}, lead = {0};
    Py_ssize_t mtu, mss = 0;
    PyObject *lead_obj = Py_None, *out = NULL, *why = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*n|n$O", kwlist, &b, &mtu, &mss, &lead_obj))
        return NULL;
    if (lead_obj != Py_None && PyObject_GetBuffer(lead_obj, &lead, PyBUF_SIMPLE) < 0) goto done;
    const unsigned char *f = b.buf;
    Py_ssize_t ihl = 0, total = 0;
    int proto = 0;
    why = ipv4_of(f, b.len, &ihl, &total, &proto);
    if (why != NULL) goto done;
    if (proto != IPPROTO_TCP_) {
        why = D_OVERSIZE;
        goto done;
    }
    Py_ssize_t start = ETH_HLEN + ihl, end = ETH_HLEN + total;
    Py_ssize_t thl = end - start >= 20 ? (Py_ssize_t)(f[start + 12] >> 4) * 4 : 0;
    Py_ssize_t chunk = mtu - ihl - thl;
    if (mss > 0 && mss < chunk) chunk = mss;
    if (thl < 20 || start + thl > end || chunk <= 0) {
        why = D_MALFORMED;
        goto done;
    }
    Py_ssize_t hlen = start + thl;
    /* The segment's header: the frame's, or lead in place of its Ethernet header. */
    const unsigned char *lead_p = lead.obj != NULL ? lead.buf : f;
    Py_ssize_t lead_n = lead.obj != NULL ? lead.len : ETH_HLEN;
    Py_ssize_t ipo = lead_n, tcpo = start - ETH_HLEN + lead_n, seg_hlen = hlen - ETH_HLEN + lead_n;
    const unsigned char *ip = f + ETH_HLEN, *tcp = f + start;
    unsigned ident = get_be16(ip + 4), frag = get_be16(ip + 6), ttl = ip[8];
    uint32_t seq = get_be32(tcp + 4);
    unsigned char flags = tcp[13];
    /* What no segment changes, summed: the IPv4 header but for total length, id and
     * checksum; the pseudo-header's addresses and protocol and the TCP header but for its
     * sequence number, flags and checksum. */
    uint64_t ip_sum = sum_words(ip, ihl) - get_be16(ip + 2) - get_be16(ip + 4) - get_be16(ip + 10);
    uint64_t base = sum_words(ip + 12, 8) + IPPROTO_TCP_ + sum_words(tcp, thl) -
                    get_be16(tcp + 4) - get_be16(tcp + 6) - tcp[13] - get_be16(tcp + 16);
    Py_ssize_t stop_at = end > hlen ? end : hlen + 1;
    Py_ssize_t count = (stop_at - hlen + chunk - 1) / chunk, last = hlen + (count - 1) * chunk;
    unsigned char mid = flags & (unsigned char)~(0x01 | TCP_PSH);
    out = PyList_New(count);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t at = hlen + i * chunk, stop = at + chunk < end ? at + chunk : end;
        Py_ssize_t size = stop > at ? stop - at : 0;
        PyObject *seg = PyByteArray_FromStringAndSize(NULL, seg_hlen + size);
        if (seg == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        unsigned char *o = (unsigned char *)PyByteArray_AS_STRING(seg);
        memcpy(o, lead_p, (size_t)lead_n);
        memcpy(o + lead_n, f + ETH_HLEN, (size_t)(hlen - ETH_HLEN));
        memcpy(o + seg_hlen, f + at, (size_t)size);
        uint32_t s = seq + (uint32_t)(at - hlen);
        unsigned char fl = (at == last ? flags : mid) & (i == 0 ? 0xFF : 0x7F);
        uint64_t c = base + (uint64_t)(thl + size) + sum_words(f + at, size) + (s >> 16) +
                     (s & 0xFFFF) + fl;
        unsigned char *t = o + tcpo;
        put_be32(t + 4, s);
        t[13] = fl;
        put_be16(t + 16, csum_field(c));
        if (i) ident = (ident + 1) & 0xFFFF;
        unsigned char *h = o + ipo;
        unsigned tot = (unsigned)(ihl + thl + size);
        put_be16(h + 2, tot);
        put_be16(h + 4, ident);
        put_be16(h + 6, frag);
        h[8] = (unsigned char)ttl;
        h[9] = IPPROTO_TCP_;
        put_be16(h + 10, csum_field(ip_sum + tot + ident));
        PyList_SET_ITEM(out, i, seg);
    }
done:
    if (lead.obj != NULL) PyBuffer_Release(&lead);
    PyBuffer_Release(&b);
    if (why != NULL) {
        Py_INCREF(why);
        return why;
    }
    return out;
}

/* --- Lane: the data plane's thread for lone packets (ipop.link.lane: read it first) --------
 *
 * The native twin of ipop.link.lane.PyLane, which defines what it does with each frame read
 * from the TAP and each datagram read from the UDP socket; its thread reads both without the
 * GIL, sends or writes what a route lets it, and hands everything else up, as read (or, once
 * opened, as plaintext), on two SOCK_SEQPACKET sockets that Python drains as it drained the
 * fds. Python owns every decision: it installs and removes the routes, and counts what the
 * lane sent and received as its own (harvest()).
 */
#define LANE_ROUTES 256
#define LANE_VIPS 8
#define LANE_VNET 10
#define LANE_FRAME_MAX 65550
#define LANE_DRAIN 64
#define UP_HDR 16 /* a UDP hand-up: kind, newest, port, IPv4, segment size, 2 zero, index */
#define UP_RAW 0
#define UP_OPENED 1

typedef struct {
    uint32_t local_index, remote_index, vips[LANE_VIPS];
    int nvips;
    BatchAead *send, *recv; /* strong references, taken and dropped under the GIL */
    Window *window;
    struct sockaddr_in to;
    Py_ssize_t max_frame;
    uint64_t counter_limit, recv_limit;
    double expires; /* CLOCK_MONOTONIC seconds */
    uint64_t n[4];  /* sent, bytes sent, received, bytes received: since the last harvest */
    double t[4];    /* first and last sent, first and last received */
} Route;

typedef struct {
    PyObject_HEAD
    int tap_fd, udp_fd, tap_up, udp_up;
    int wake_fd, stopping; /* wakes the thread: to stop, or to read an fd Python gave back */
    unsigned char lead[2];      /* TYPE_DIRECT, KIND_IP */
    unsigned char eth[LANE_VNET + ETH_HLEN];
    int has_eth;
    uint32_t accepted[LANE_VIPS]; /* this node's own addresses */
    int naccepted;
    pthread_t thread;
    int running;
    pthread_mutex_t lock; /* the routes, the addresses and the header */
    Route routes[LANE_ROUTES];
    int nroutes;
    /* Frames, datagrams handed up that Python has not finished. While one is, Python reads
     * that fd itself (it holds the baton: a burst is read in batches as without the lane),
     * and the thread does not until done() gives it back. */
    int inflight[2];
    uint64_t stat[6];  /* fast, up, send_errors, io_errors, delivered, udp_up (atomic) */
} Lane;

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void note(Route *r, int k, uint64_t bytes, double now) {
    r->n[k] += 1;
    r->n[k + 1] += bytes;
    if (r->t[k] == 0.0) r->t[k] = now;
    r->t[k + 1] = now;
}

static int has_vip(const uint32_t *vips, int n, uint32_t v) {
    while (n-- > 0) if (vips[n] == v) return 1;
    return 0;
}

/* A TAP frame f (n bytes: virtio header, Ethernet) sealed into out: the datagram's length and
 * *to its address; 0: hand it up (PyLane.process). */
static Py_ssize_t lane_seal(Lane *self, const unsigned char *f, Py_ssize_t n, double now,
                            unsigned char *out, struct sockaddr_in *to) {
    const unsigned char *e = f + LANE_VNET;
    Py_ssize_t flen = n - LANE_VNET, len = 0;
    if (flen < ETH_HLEN + IP_HLEN || f[0] != 0 || f[1] != 0 || e[12] != 0x08 || e[13] != 0)
        return 0;
    if (__atomic_load_n(&self->inflight[0], __ATOMIC_ACQUIRE) > 0) return 0; /* keep order */
    uint32_t dst = get_be32(e + 30);
    pthread_mutex_lock(&self->lock);
    for (int i = 0; i < self->nroutes; i++) {
        Route *r = &self->routes[i];
        if (!has_vip(r->vips, r->nvips, dst)) continue;
        BatchAead *a = r->send;
        if (now >= r->expires || flen > r->max_frame) break;
        pthread_mutex_lock(&a->lock);
        uint64_t counter = a->counter;
        if (counter >= r->counter_limit) { /* Python starts the rekey */
            pthread_mutex_unlock(&a->lock);
            break;
        }
        __atomic_store_n(&a->counter, counter + 1, __ATOMIC_RELAXED);
        unsigned char nonce[12];
        int l;
        Py_ssize_t plen = 2 + flen - ETH_HLEN;
        out[0] = TYPE_DATA;
        put_be32(out + 1, r->remote_index);
        put_be64(out + 5, counter);
        nonce_of(nonce, counter);
        int ok = EVP_EncryptInit_ex(a->enc, NULL, NULL, NULL, nonce) == 1 &&
                 EVP_EncryptUpdate(a->enc, NULL, &l, out, HDR) == 1 &&
                 EVP_EncryptUpdate(a->enc, out + HDR, &l, self->lead, 2) == 1 &&
                 EVP_EncryptUpdate(a->enc, out + HDR + 2, &l, e + ETH_HLEN,
                                   (int)(flen - ETH_HLEN)) == 1 &&
                 EVP_EncryptFinal_ex(a->enc, out + HDR + plen, &l) == 1 &&
                 EVP_CIPHER_CTX_ctrl(a->enc, EVP_CTRL_AEAD_GET_TAG, TAG, out + HDR + plen) == 1;
        pthread_mutex_unlock(&a->lock);
        if (!ok) break; /* the counter is spent: a gap the receiver's window allows */
        len = HDR + plen + TAG;
        *to = r->to;
        note(r, 0, (uint64_t)len, now);
        break;
    }
    pthread_mutex_unlock(&self->lock);
    return len;
}

/* A datagram d (n bytes) from `from`, not coalesced (PyLane.receive): UP_RAW (hand it up as
 * read), UP_OPENED (the plaintext, *plen bytes, in out; *index and *newest set: hand it up
 * opened) or 2 (deliver the packet at out + 2, *plen - 2 bytes, behind self->eth). */
static int lane_open(Lane *self, const unsigned char *d, Py_ssize_t n,
                     const struct sockaddr_in *from, double now, unsigned char *out,
                     Py_ssize_t *plen, uint32_t *index, int *newest) {
    if (n < HDR + TAG || d[0] != TYPE_DATA) return UP_RAW;
    if (__atomic_load_n(&self->inflight[1], __ATOMIC_ACQUIRE) > 0) return UP_RAW;
    *index = get_be32(d + 1);
    uint64_t counter = get_be64(d + 5);
    int verdict = UP_RAW;
    pthread_mutex_lock(&self->lock);
    for (int i = 0; i < self->nroutes; i++) {
        Route *r = &self->routes[i];
        if (r->local_index != *index) continue;
        if (now >= r->expires || counter >= r->recv_limit) break;
        BatchAead *a = r->recv;
        Window *w = r->window;
        unsigned char nonce[12], tag[TAG];
        int l;
        Py_ssize_t clen = n - HDR - TAG;
        pthread_mutex_lock(&a->lock);
        pthread_mutex_lock(&w->lock);
        if (window_reason(w->seen, w->width, w->top, counter) == NULL) {
            memcpy(tag, d + n - TAG, TAG);
            nonce_of(nonce, counter);
            int ok = EVP_DecryptInit_ex(a->dec, NULL, NULL, NULL, nonce) == 1 &&
                     EVP_DecryptUpdate(a->dec, NULL, &l, d, HDR) == 1 &&
                     EVP_DecryptUpdate(a->dec, out, &l, d + HDR, (int)clen) == 1 &&
                     EVP_CIPHER_CTX_ctrl(a->dec, EVP_CTRL_AEAD_SET_TAG, TAG, tag) == 1 &&
                     EVP_DecryptFinal_ex(a->dec, out + l, &l) == 1;
            if (ok) {
                *newest = w->top < 0 || counter > (uint64_t)w->top;
                window_accept(w->seen, w->width, &w->top, counter);
                verdict = UP_OPENED;
            } else {
                OPENSSL_cleanse(out, (size_t)clen); /* Python opens it again, and counts */
            }
        }
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_unlock(&a->lock);
        if (verdict != UP_OPENED) break;
        *plen = clen;
        note(r, 2, (uint64_t)n, now);
        /* Delivered here only as Python's own check would deliver it (DataPlane._take). */
        if (from->sin_addr.s_addr == r->to.sin_addr.s_addr && from->sin_port == r->to.sin_port &&
            clen >= 2 + IP_HLEN && out[0] == self->lead[0] && out[1] == self->lead[1] &&
            out[2] >> 4 == 4 && self->has_eth &&
            has_vip(self->accepted, self->naccepted, get_be32(out + 18)) &&
            has_vip(r->vips, r->nvips, get_be32(out + 14)))
            verdict = 2;
        break;
    }
    pthread_mutex_unlock(&self->lock);
    return verdict;
}

/* Hand a record up (which: 0 frames, 1 datagrams): 2 (the baton is Python's), 0 (dropped: the
 * socket failed) or -1 (the lane is stopping). */
static int lane_hand_up(Lane *self, int which, const struct iovec *iov, int iovcnt) {
    int fd = which ? self->udp_up : self->tap_up;
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    __atomic_add_fetch(&self->inflight[which], 1, __ATOMIC_RELEASE);
    for (;;) {
        if (sendmsg(fd, &m, MSG_DONTWAIT) >= 0) {
            __atomic_add_fetch(&self->stat[which ? 5 : 1], 1, __ATOMIC_RELAXED);
            return 2;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN) break;
        /* Python is behind: wait for room (back-pressure, as when it read the fds itself). */
        struct pollfd p[2] = {{fd, POLLOUT, 0}, {self->wake_fd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (__atomic_load_n(&self->stopping, __ATOMIC_ACQUIRE)) {
            __atomic_sub_fetch(&self->inflight[which], 1, __ATOMIC_RELEASE);
            return -1;
        }
    }
    __atomic_sub_fetch(&self->inflight[which], 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&self->stat[3], 1, __ATOMIC_RELAXED);
    return 0;
}

static int lane_tap(Lane *self, unsigned char *in, unsigned char *out) {
    ssize_t n = read(self->tap_fd, in, LANE_FRAME_MAX);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -2;
    struct sockaddr_in to;
    Py_ssize_t len = lane_seal(self, in, n, mono_now(), out, &to);
    if (len == 0) {
        struct iovec iov = {in, (size_t)n};
        return lane_hand_up(self, 0, &iov, 1);
    }
    int ok = sendto(self->udp_fd, out, (size_t)len, 0, (struct sockaddr *)&to, sizeof to) >= 0;
    __atomic_add_fetch(&self->stat[ok ? 0 : 2], 1, __ATOMIC_RELAXED);
    return 1;
}

static int lane_udp(Lane *self, unsigned char *in, unsigned char *out) {
    struct sockaddr_in from = {0};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {in, LANE_FRAME_MAX};
    struct msghdr m = {&from, sizeof from, &iov, 1, ctl.buf, sizeof ctl.buf, 0};
    ssize_t n = recvmsg(self->udp_fd, &m, 0);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -2;
    int seg = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c != NULL; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == 104 /* UDP_GRO */)
            memcpy(&seg, CMSG_DATA(c), sizeof seg);
    unsigned char hdr[UP_HDR] = {UP_RAW};
    Py_ssize_t plen = 0;
    uint32_t index = 0;
    int newest = 0, v = UP_RAW;
    if (m.msg_namelen == sizeof from && from.sin_family == AF_INET && (seg <= 0 || seg >= n))
        v = lane_open(self, in, n, &from, mono_now(), out, &plen, &index, &newest);
    if (v == 2) {
        struct iovec w[2] = {{self->eth, sizeof self->eth}, {out + 2, (size_t)(plen - 2)}};
        int ok = writev(self->tap_fd, w, 2) >= 0;
        __atomic_add_fetch(&self->stat[ok ? 4 : 3], 1, __ATOMIC_RELAXED);
        return 1;
    }
    hdr[0] = (unsigned char)v;
    hdr[1] = (unsigned char)newest;
    memcpy(hdr + 2, &from.sin_port, 2);
    memcpy(hdr + 4, &from.sin_addr, 4);
    hdr[8] = (unsigned char)(seg > 0 && seg < n ? seg >> 8 : 0);
    hdr[9] = (unsigned char)(seg > 0 && seg < n ? seg : 0);
    put_be32(hdr + 12, index);
    struct iovec up[2] = {{hdr, UP_HDR}, {v ? out : in, (size_t)(v ? plen : n)}};
    return lane_hand_up(self, 1, up, 2);
}

/* Poll the fds the lane holds the baton of (and the wake-up); read each until it is empty or
 * something went up (then Python holds its baton until done()). */
static void *lane_main(void *arg) {
    Lane *self = (Lane *)arg;
    static __thread unsigned char in[LANE_FRAME_MAX], out[LANE_FRAME_MAX + HDR + TAG];
    int fds[2] = {self->tap_fd, self->udp_fd};
    sigset_t all; /* signals are the main thread's (Python runs their handlers there) */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    for (;;) {
        struct pollfd p[3] = {{self->wake_fd, POLLIN, 0}};
        int which_of[3] = {-1, -1, -1}, np = 1;
        for (int which = 0; which < 2; which++) {
            if (__atomic_load_n(&self->inflight[which], __ATOMIC_ACQUIRE) > 0) continue;
            p[np] = (struct pollfd){fds[which], POLLIN, 0};
            which_of[np++] = which;
        }
        if (poll(p, (nfds_t)np, -1) < 0 && errno != EINTR) return NULL;
        if (p[0].revents) {
            uint64_t v;
            ssize_t r = read(self->wake_fd, &v, sizeof v);
            (void)r;
        }
        if (__atomic_load_n(&self->stopping, __ATOMIC_ACQUIRE)) return NULL;
        for (int i = 1; i < np; i++) {
            if (!p[i].revents) continue;
            for (int k = 0; k < LANE_DRAIN; k++) {
                int r = which_of[i] ? lane_udp(self, in, out) : lane_tap(self, in, out);
                if (r == -1) return NULL;
                if (r == -2) __atomic_add_fetch(&self->stat[3], 1, __ATOMIC_RELAXED);
                if (r != 1) break;
            }
        }
    }
}

static int Lane_init(Lane *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tap_fd", "udp_fd", "tap_up", "udp_up", "lead", NULL};
    Py_buffer lead;
    if (self->wake_fd > 0) return (PyErr_SetString(PyExc_RuntimeError, "a Lane is made once"), -1);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiiiy*", kwlist, &self->tap_fd, &self->udp_fd,
                                     &self->tap_up, &self->udp_up, &lead))
        return -1;
    int ok = lead.len == 2;
    if (ok) memcpy(self->lead, lead.buf, 2);
    PyBuffer_Release(&lead);
    if (!ok) return (PyErr_SetString(PyExc_ValueError, "lead must be 2 bytes"), -1);
    if ((self->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return (PyErr_SetFromErrno(PyExc_OSError), -1);
    pthread_mutex_init(&self->lock, NULL);
    return 0;
}

static void lane_wake(Lane *self) {
    uint64_t one = 1;
    ssize_t w = write(self->wake_fd, &one, sizeof one);
    (void)w;
}

static PyObject *Lane_start(Lane *self, PyObject *Py_UNUSED(ignored)) {
    if (self->wake_fd <= 0 || self->running || self->stopping) {
        PyErr_SetString(PyExc_RuntimeError, "the lane is not ready to start");
        return NULL;
    }
    int rc = pthread_create(&self->thread, NULL, lane_main, self);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    self->running = 1;
    Py_RETURN_NONE;
}

static PyObject *Lane_stop(Lane *self, PyObject *Py_UNUSED(ignored)) {
    if (self->running) {
        __atomic_store_n(&self->stopping, 1, __ATOMIC_RELEASE);
        lane_wake(self);
        Py_BEGIN_ALLOW_THREADS
        pthread_join(self->thread, NULL);
        Py_END_ALLOW_THREADS
        self->running = 0;
    }
    Py_RETURN_NONE;
}

static void route_clear(Route *r) {
    Py_CLEAR(r->send);
    Py_CLEAR(r->recv);
    Py_CLEAR(r->window);
}

static void Lane_dealloc(Lane *self) {
    PyObject *r = Lane_stop(self, NULL);
    Py_XDECREF(r);
    if (self->wake_fd > 0) {
        for (int i = 0; i < self->nroutes; i++) route_clear(&self->routes[i]);
        pthread_mutex_destroy(&self->lock);
        close(self->wake_fd);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A list of at most LANE_VIPS IPv4 addresses (ints) into vips; their count, or -1. */
static int parse_vips(PyObject *seq, uint32_t *vips) {
    PyObject *fast = PySequence_Fast(seq, "addresses must be a sequence");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t i = 0; i < n && n <= LANE_VIPS; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PySequence_Fast_GET_ITEM(fast, i));
        if (PyErr_Occurred() || v > 0xFFFFFFFFUL) n = LANE_VIPS + 1;
        else vips[i] = (uint32_t)v;
    }
    Py_DECREF(fast);
    if (n > LANE_VIPS) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "at most 8 IPv4 addresses");
        return -1;
    }
    return (int)n;
}

/* route(local_index, vips, send, remote_index, host, port, max_frame, counter_limit,
 *       expires, recv, window, recv_limit) -> bool (PyLane.route) */
static PyObject *Lane_route(Lane *self, PyObject *args) {
    unsigned long li, ri;
    PyObject *vips, *send, *recv, *window;
    const char *host;
    int port;
    Route r = {0};
    if (!PyArg_ParseTuple(args, "kOO!ksinO&dO!O!O&", &li, &vips, &BatchAeadType, &send, &ri, &host,
                          &port, &r.max_frame, to_u64, &r.counter_limit, &r.expires,
                          &BatchAeadType, &recv, &WindowType, &window, to_u64, &r.recv_limit))
        return NULL;
    if ((r.nvips = parse_vips(vips, r.vips)) < 0) return NULL;
    r.to.sin_family = AF_INET;
    r.to.sin_port = htons((uint16_t)port);
    if (li > 0xFFFFFFFFUL || ri > 0xFFFFFFFFUL || port < 1 || port > 65535 ||
        inet_pton(AF_INET, host, &r.to.sin_addr) != 1 || r.max_frame < ETH_HLEN + IP_HLEN ||
        r.max_frame > LANE_FRAME_MAX - LANE_VNET || ((Window *)window)->seen == NULL) {
        PyErr_SetString(PyExc_ValueError, "route out of range");
        return NULL;
    }
    r.local_index = (uint32_t)li;
    r.remote_index = (uint32_t)ri;
    Py_INCREF(send);
    Py_INCREF(recv);
    Py_INCREF(window);
    r.send = (BatchAead *)send;
    r.recv = (BatchAead *)recv;
    r.window = (Window *)window;
    Route old = {0};
    int placed = 0;
    pthread_mutex_lock(&self->lock);
    for (int i = 0; i < self->nroutes && !placed; i++) {
        if (self->routes[i].local_index == r.local_index) {
            old = self->routes[i];
            memcpy(r.n, old.n, sizeof r.n); /* not harvested yet: kept */
            memcpy(r.t, old.t, sizeof r.t);
            self->routes[i] = r;
            placed = 1;
        }
    }
    if (!placed && self->nroutes < LANE_ROUTES) {
        self->routes[self->nroutes++] = r;
        placed = 1;
    }
    pthread_mutex_unlock(&self->lock);
    route_clear(&old);
    if (!placed) route_clear(&r);
    return PyBool_FromLong(placed);
}

static PyObject *route_counts(const Route *r) {
    return Py_BuildValue("kKKddKKdd", (unsigned long)r->local_index, (unsigned long long)r->n[0],
                         (unsigned long long)r->n[1], r->t[0], r->t[1],
                         (unsigned long long)r->n[2], (unsigned long long)r->n[3], r->t[2],
                         r->t[3]);
}

/* unroute(local_index) -> its counts not harvested yet, or None (PyLane.unroute) */
static PyObject *Lane_unroute(Lane *self, PyObject *arg) {
    unsigned long li = PyLong_AsUnsignedLong(arg);
    if (li == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    Route gone = {0};
    pthread_mutex_lock(&self->lock);
    for (int i = 0; i < self->nroutes; i++) {
        if (self->routes[i].local_index == (uint32_t)li) {
            gone = self->routes[i];
            self->routes[i] = self->routes[--self->nroutes];
            break;
        }
    }
    pthread_mutex_unlock(&self->lock);
    if (gone.send == NULL) Py_RETURN_NONE;
    PyObject *counts = route_counts(&gone);
    route_clear(&gone);
    return counts;
}

/* harvest() -> the counts of each route that sent or received since the last call */
static PyObject *Lane_harvest(Lane *self, PyObject *Py_UNUSED(ignored)) {
    Route got[LANE_ROUTES];
    int n = 0;
    pthread_mutex_lock(&self->lock);
    for (int i = 0; i < self->nroutes; i++) {
        Route *r = &self->routes[i];
        if (r->n[0] == 0 && r->n[2] == 0) continue;
        got[n++] = *r;
        memset(r->n, 0, sizeof r->n);
        memset(r->t, 0, sizeof r->t);
    }
    pthread_mutex_unlock(&self->lock);
    PyObject *out = PyList_New(n);
    for (int i = 0; out != NULL && i < n; i++) {
        PyObject *t = route_counts(&got[i]);
        if (t == NULL) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, t);
    }
    return out;
}

/* set_local(accepted, eth): this node's addresses and the header its TAP writes take */
static PyObject *Lane_set_local(Lane *self, PyObject *args) {
    PyObject *acc;
    Py_buffer eth;
    uint32_t vips[LANE_VIPS];
    if (!PyArg_ParseTuple(args, "Oy*", &acc, &eth)) return NULL;
    int n = parse_vips(acc, vips);
    int ok = n >= 0 && (eth.len == 0 || eth.len == (Py_ssize_t)sizeof self->eth);
    if (ok) {
        pthread_mutex_lock(&self->lock);
        memcpy(self->accepted, vips, sizeof vips);
        self->naccepted = n;
        self->has_eth = eth.len > 0;
        if (eth.len) memcpy(self->eth, eth.buf, sizeof self->eth);
        pthread_mutex_unlock(&self->lock);
    } else if (n >= 0) {
        PyErr_SetString(PyExc_ValueError, "eth must be a virtio and an Ethernet header");
    }
    PyBuffer_Release(&eth);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Lane_done(Lane *self, PyObject *args) {
    int which, n;
    if (!PyArg_ParseTuple(args, "ii", &which, &n)) return NULL;
    if (which < 0 || which > 1 || n < 0 ||
        n > __atomic_load_n(&self->inflight[which], __ATOMIC_ACQUIRE)) {
        PyErr_SetString(PyExc_ValueError, "done() more than were handed up");
        return NULL;
    }
    /* The baton is the lane's again: it polls that fd from now on. */
    if (__atomic_sub_fetch(&self->inflight[which], n, __ATOMIC_RELEASE) == 0 && n > 0)
        lane_wake(self);
    Py_RETURN_NONE;
}

/* process(frame, now) -> (datagram, host, port) | None: lane_seal without the thread, for
 * the differential test and the fuzzer (now: the monotonic clock's seconds). */
static PyObject *Lane_process(Lane *self, PyObject *args) {
    Py_buffer b;
    double now;
    if (!PyArg_ParseTuple(args, "y*d", &b, &now)) return NULL;
    PyObject *out = b.len > LANE_FRAME_MAX ? NULL : PyBytes_FromStringAndSize(NULL, b.len + HDR + TAG);
    struct sockaddr_in to;
    Py_ssize_t len = out == NULL ? 0 : lane_seal(self, b.buf, b.len, now,
                                                 (unsigned char *)PyBytes_AS_STRING(out), &to);
    PyBuffer_Release(&b);
    if (len == 0) Py_XDECREF(out);
    if (len == 0 || _PyBytes_Resize(&out, len) < 0)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &to.sin_addr, host, sizeof host);
    return Py_BuildValue("Nsi", out, host, (int)ntohs(to.sin_port));
}

/* receive(datagram, host, port, now) -> None (up as read) | ("opened", index, newest,
 * plaintext) | ("tap", packet): lane_open without the thread, as process() is lane_seal. */
static PyObject *Lane_receive(Lane *self, PyObject *args) {
    Py_buffer b;
    const char *host;
    int port;
    double now;
    struct sockaddr_in from = {.sin_family = AF_INET};
    if (!PyArg_ParseTuple(args, "y*sid", &b, &host, &port, &now)) return NULL;
    from.sin_port = htons((uint16_t)port);
    int v = UP_RAW, newest = 0;
    Py_ssize_t plen = 0;
    uint32_t index = 0;
    unsigned char *out = b.len > LANE_FRAME_MAX ? NULL : PyMem_Malloc((size_t)b.len + 1);
    if (out != NULL && inet_pton(AF_INET, host, &from.sin_addr) == 1)
        v = lane_open(self, b.buf, b.len, &from, now, out, &plen, &index, &newest);
    PyBuffer_Release(&b);
    PyObject *r = v == UP_RAW ? Py_NewRef(Py_None)
                  : v == 2 ? Py_BuildValue("(sy#)", "tap", out + 2, plen - 2)
                           : Py_BuildValue("(skiy#)", "opened", (unsigned long)index, newest,
                                           out, plen);
    PyMem_Free(out);
    return r;
}

static PyObject *Lane_stats(Lane *self, PyObject *Py_UNUSED(ignored)) {
    unsigned long long v[8];
    for (int i = 0; i < 8; i++)
        v[i] = i < 6 ? __atomic_load_n(&self->stat[i], __ATOMIC_RELAXED)
                     : (unsigned long long)__atomic_load_n(&self->inflight[i - 6], __ATOMIC_RELAXED);
    return Py_BuildValue("{sKsKsKsKsKsKsKsK}", "fast", v[0], "up", v[1], "send_errors", v[2],
                         "io_errors", v[3], "delivered", v[4], "udp_up", v[5], "inflight", v[6],
                         "udp_inflight", v[7]);
}

static PyMethodDef Lane_methods[] = {
    {"start", (PyCFunction)Lane_start, METH_NOARGS, "start the thread"},
    {"stop", (PyCFunction)Lane_stop, METH_NOARGS, "stop the thread and wait for it"},
    {"route", (PyCFunction)Lane_route, METH_VARARGS, "route(...) -> bool: see PyLane.route"},
    {"unroute", (PyCFunction)Lane_unroute, METH_O, "unroute(local_index) -> counts | None"},
    {"harvest", (PyCFunction)Lane_harvest, METH_NOARGS, "harvest() -> [counts]"},
    {"set_local", (PyCFunction)Lane_set_local, METH_VARARGS, "set_local(accepted, eth)"},
    {"done", (PyCFunction)Lane_done, METH_VARARGS, "done(which, n): n hand-ups finished"},
    {"process", (PyCFunction)Lane_process, METH_VARARGS, "process(frame, now)"},
    {"receive", (PyCFunction)Lane_receive, METH_VARARGS, "receive(datagram, host, port, now)"},
    {"stats", (PyCFunction)Lane_stats, METH_NOARGS, "stats() -> counters"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipop.link._fastpath.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The data plane's thread for lone packets; see ipop.link.lane.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_methods = Lane_methods,
};

static PyMethodDef fastpath_functions[] = {
    {"coalesce", (PyCFunction)fp_coalesce, METH_O,
     "coalesce(packets) -> [(virtio header, packet)]: ipop.vnet.gro.coalesce, natively"},
    {"split_tcp", (PyCFunction)(void (*)(void))fp_split_tcp, METH_VARARGS | METH_KEYWORDS,
     "split_tcp(frame, mtu, mss=0, *, lead=None) -> [bytearray] | reason: "
     "ipop.vnet.offload.split_tcp, natively"},
    {"finish_frame", (PyCFunction)fp_finish_frame, METH_O,
     "finish_frame(frame) -> None | reason: ipop.vnet.offload.finish_frame, natively"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT, "_fastpath",
    "Native runs of DATA seal/open (ipop.link.fastpath), TCP coalescing (ipop.vnet.gro) and "
    "offload cutting (ipop.vnet.offload).",
    -1, fastpath_functions, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&BatchAeadType) < 0 || PyType_Ready(&LaneType) < 0 ||
        PyType_Ready(&WindowType) < 0)
        return NULL;
    R_EXPIRED = PyUnicode_InternFromString("expired_key");
    R_TOO_OLD = PyUnicode_InternFromString("too_old");
    R_REPLAY = PyUnicode_InternFromString("replay");
    R_AUTH = PyUnicode_InternFromString("auth_failed");
    NO_GSO = PyBytes_FromStringAndSize("\0\0\0\0\0\0\0\0\0\0", 10);
    D_MALFORMED = PyUnicode_InternFromString("csum_malformed");
    D_FRAGMENT = PyUnicode_InternFromString("csum_fragment");
    D_PROTOCOL = PyUnicode_InternFromString("csum_protocol");
    D_OVERSIZE = PyUnicode_InternFromString("lan_oversize");
    if (!R_EXPIRED || !R_TOO_OLD || !R_REPLAY || !R_AUTH || !NO_GSO || !D_MALFORMED ||
        !D_FRAGMENT || !D_PROTOCOL || !D_OVERSIZE)
        return NULL;
    PyObject *m = PyModule_Create(&fastpath_module);
    if (m == NULL) return NULL;
    /* PyModule_AddType (3.10+) takes its own reference to each type. */
    if (PyModule_AddType(m, &BatchAeadType) < 0 || PyModule_AddType(m, &LaneType) < 0 ||
        PyModule_AddType(m, &WindowType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
