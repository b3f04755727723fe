/* ipop.link._fastpath: seal and open runs of DATA datagrams for one established key; and,
 * after them in this file, the TAP's TCP byte work: a batch's segments coalesced for a write
 * (ipop.vnet.gro) and a read's batch cut, or its checksum finished (ipop.vnet.offload).
 *
 * The native twin of ipop.link.fastpath.PyBatchAead (read that module's docstring first: it
 * is the definition; this file only does the same thing without a Python call per packet).
 * One BatchAead object holds one direction's AEAD key in an OpenSSL EVP context, and nothing
 * else: the send counter and the replay window stay in the Python Keypair and ReplayWindow,
 * which hand them in on every call and get them back, so there is one owner of each piece
 * of state whichever implementation runs, and a counter never repeats across the two.
 *
 * Wire format (ipop.wire.header): 0xC3 | receiver_index (4, BE) | counter (8, BE) | AEAD
 * ciphertext | 16-byte tag; nonce = 4 zero bytes || counter (BE); AAD = the 13-byte header.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

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

static void BatchAead_dealloc(BatchAead *self) {
    EVP_CIPHER_CTX_free(self->enc); /* frees and cleanses the key schedule */
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
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
static PyObject *BatchAead_seal(BatchAead *self, PyObject *args) {
    unsigned long long index, counter;
    PyObject *payloads;
    Py_buffer head = {0}, strip = {0};
    PyObject *seq = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "O&O&O|y*y*", to_u64, &index, to_u64, &counter, &payloads, &head,
                          &strip))
        return NULL;
    if (index > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "index out of range");
        goto done;
    }
    seq = PySequence_Fast(payloads, "payloads must be a sequence");
    if (seq == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > 0 && counter > UINT64_MAX - (uint64_t)(n - 1)) {
        PyErr_SetString(PyExc_ValueError, "counter out of range");
        goto done;
    }
    out = PyList_New(0);
    if (out == NULL) goto done;
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
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(seq);
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
    PyObject *seen_obj = PyObject_GetAttrString(window, "seen");
    if (seen_obj == NULL) return NULL;
    PyObject *top_obj = PyObject_GetAttrString(window, "top");
    if (top_obj == NULL) {
        Py_DECREF(seen_obj);
        return NULL;
    }
    long long top_ll = PyLong_AsLongLong(top_obj);
    Py_DECREF(top_obj);
    if (top_ll == -1 && PyErr_Occurred()) {
        Py_DECREF(seen_obj);
        return NULL;
    }
    if (!PyByteArray_Check(seen_obj) || PyByteArray_GET_SIZE(seen_obj) < 1 || top_ll < -1) {
        Py_DECREF(seen_obj);
        PyErr_SetString(PyExc_TypeError, "window: seen must be a non-empty bytearray");
        return NULL;
    }
    int64_t top = (int64_t)top_ll;
    unsigned char *seen = (unsigned char *)PyByteArray_AS_STRING(seen_obj);
    uint64_t width = (uint64_t)PyByteArray_GET_SIZE(seen_obj);
    PyObject *results = PyList_New(0);
    if (results == NULL) {
        Py_DECREF(seen_obj);
        return NULL;
    }
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
        } else if ((r = window_reason(seen, width, top, counter)) != NULL) {
            Py_INCREF(r);
        } else {
            r = open_one(self, d, len, counter, &failed);
            if (r == NULL && !failed) goto error;
            if (failed) {
                r = R_AUTH;
                Py_INCREF(r);
            } else {
                window_accept(seen, width, &top, counter); /* only after the tag verified */
            }
        }
        int rc = PyList_Append(results, r);
        Py_DECREF(r);
        if (rc < 0) goto error;
    }
    PyObject *new_top = PyLong_FromLongLong(top);
    if (new_top == NULL || PyObject_SetAttrString(window, "top", new_top) < 0) {
        Py_XDECREF(new_top);
        goto error;
    }
    Py_DECREF(new_top);
    Py_DECREF(seen_obj);
    PyObject *ret = Py_BuildValue("(nN)", i, results);
    return ret;
error:
    /* The window as far as it got: what was accepted stays accepted (never accepted twice). */
    {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        PyObject *t = PyLong_FromLongLong(top);
        if (t != NULL) {
            if (PyObject_SetAttrString(window, "top", t) < 0) PyErr_Clear();
            Py_DECREF(t);
        } else {
            PyErr_Clear();
        }
        PyErr_Restore(et, ev, tb);
    }
    Py_DECREF(seen_obj);
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
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BatchAeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ipop.link._fastpath.BatchAead",
    .tp_basicsize = sizeof(BatchAead),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One direction's AEAD key; see ipop.link.fastpath.PyBatchAead.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)BatchAead_init,
    .tp_dealloc = (destructor)BatchAead_dealloc,
    .tp_methods = BatchAead_methods,
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
    if (PyType_Ready(&BatchAeadType) < 0) return NULL;
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
    Py_INCREF(&BatchAeadType);
    if (PyModule_AddObject(m, "BatchAead", (PyObject *)&BatchAeadType) < 0) {
        Py_DECREF(&BatchAeadType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
