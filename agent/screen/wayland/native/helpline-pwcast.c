/*
 * helpline-pwcast: read one PipeWire screen-cast node and write its buffers to a pipe, with the
 * damage and cursor metadata that GStreamer's pipewiresrc drops (issue 14).
 *
 * Usage: helpline-pwcast --node N --out FD [--remote FD] [--width W --height H] [--pixels full|damage]
 *                        [--verbose]
 *
 * --pixels damage (the agent's choice): only what changed is written. The damage is the compositor's
 * (SPA_META_VideoDamage) where it sends any; Mutter 43 sends none, so the program keeps a copy of the
 * last frame and compares each buffer with it in 64-pixel tiles (one memcmp per row first: a still
 * row costs one call), writing the changed tiles as rectangles — or nothing, when Mutter sent the
 * same picture again (it repaints the whole monitor when the pointer moves over the bare desktop).
 * A buffer whose changed tiles cover more than half the frame is written whole, with them as its damage.
 * --pixels full writes every buffer whole, as the gst-launch reader does (for measurements).
 *
 * --remote: a PipeWire connection the xdg-desktop-portal opened (OpenPipeWireRemote), inherited;
 * without it the user's PipeWire ($XDG_RUNTIME_DIR/pipewire-0). BGRx (or BGRA) in shared memory
 * (MemFd/MemPtr, never DmaBuf: we read the pixels on the CPU). Everything the agent reads is
 * written to --out as records (little endian), agent/screen/wayland/native_stream.py parses them:
 *
 *   header (64 bytes): magic "HPWC", u16 version (1), u16 flags, u32 sequence, u32 width,
 *   u32 height, u32 rect count, i32 cursor x, i32 cursor y, i32 hotspot x, i32 hotspot y,
 *   u32 shape width, u32 shape height, 16 bytes zero
 *   rect count × (u32 x, y, w, h)          damage, clipped to the frame
 *   shape w × h × 4 bytes RGBA              when FLAG_SHAPE
 *   pixels: w × h × 4 BGRx (FLAG_FULL) or the rects' pixels row by row, rect after rect (FLAG_RECTS)
 *
 * A buffer without pixels (Mutter sends one when only the pointer moved) has neither pixel flag.
 * The process ends on SIGTERM, when the stream errors or unconnects, or when the pipe closes.
 * Written for this project; the pw_stream calls follow PipeWire's documented API (pipewire/stream.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <pipewire/pipewire.h>
#include <spa/buffer/meta.h>
#include <spa/param/video/format-utils.h>
#include <spa/pod/builder.h>
#include <spa/debug/types.h>

#define MAGIC 0x43575048u /* "HPWC" read as little-endian u32 */
#define VERSION 1
#define FLAG_FULL 1u      /* the whole frame's pixels follow */
#define FLAG_RECTS 2u     /* only the damage rectangles' pixels follow */
#define FLAG_DAMAGE 4u    /* the rectangles are the compositor's damage (else: everything changed) */
#define FLAG_CURSOR 8u    /* cursor metadata present: position valid */
#define FLAG_SHAPE 16u    /* a new cursor image follows */
#define FLAG_HIDDEN 32u   /* cursor metadata present, pointer not on this stream */
#define FLAG_COMPUTED 64u /* the rectangles come from comparing with the last frame, not from the compositor */
#define TILE 64
#define MAX_RECTS 64      /* more damage than this: reported as everything */
#define MAX_SIDE 16384
#define MAX_CURSOR 512    /* cursor bitmaps accepted up to this side (Mutter 43 asks room for 384; the viewer takes up to 128) */
#define CURSOR_META_SIZE(w, h) (sizeof(struct spa_meta_cursor) + sizeof(struct spa_meta_bitmap) + (w) * (h) * 4)

struct header {
	uint32_t magic;
	uint16_t version, flags;
	uint32_t sequence, width, height, n_rects;
	int32_t cursor_x, cursor_y, hot_x, hot_y;
	uint32_t shape_w, shape_h;
	uint32_t reserved[4];
};
_Static_assert(sizeof(struct header) == 64, "header is 64 bytes");

struct rect { uint32_t x, y, w, h; };

struct app {
	struct pw_main_loop *loop;
	struct pw_stream *stream;
	struct spa_hook listener;
	struct spa_video_info_raw format;
	int out, verbose, damage_pixels, exit_code;
	uint32_t want_w, want_h, sequence;
	int have_format, sent_full, stopping;
	uint8_t *shape; /* RGBA of the cursor image being written */
	uint8_t *last;  /* --pixels damage: the frame as last written (W*H*4, tight rows) */
	int32_t last_cursor[3]; /* flags & (CURSOR|HIDDEN), x, y of the last record: unchanged ones are not written */
};

static void quit(struct app *app, int code, const char *why) {
	if (why) fprintf(stderr, "helpline-pwcast: %s\n", why);
	if (!app->exit_code) app->exit_code = code;
	app->stopping = 1;
	pw_main_loop_quit(app->loop);
}

/* A record's pieces gathered for writev: one system call per BATCH pieces instead of one per pixel row (a
 * frame of motion is thousands of rows; writing them one by one cost the child more than its comparison and
 * woke the reader for every row). */
#define BATCH 1024 /* IOV_MAX on Linux */
struct batch { int fd, failed, n; struct iovec v[BATCH]; };

static void batch_flush(struct batch *b) {
	int i = 0;
	while (!b->failed && i < b->n) {
		ssize_t done = writev(b->fd, b->v + i, b->n - i);
		if (done < 0) {
			if (errno == EINTR) continue;
			b->failed = 1;
			break;
		}
		while (i < b->n && (size_t)done >= b->v[i].iov_len) done -= (ssize_t)b->v[i++].iov_len;
		if (i < b->n) { /* a partial write: the rest of this piece next */
			b->v[i].iov_base = (uint8_t *)b->v[i].iov_base + done;
			b->v[i].iov_len -= (size_t)done;
		}
	}
	b->n = 0;
}

static void batch_add(struct batch *b, const void *data, size_t size) {
	if (!size || b->failed) return;
	if (b->n == BATCH) batch_flush(b);
	b->v[b->n++] = (struct iovec){(void *)data, size};
}

/* The damage regions of the buffer clipped to the frame; -1 when there is no (usable) damage metadata. */
static int read_damage(struct app *app, struct spa_buffer *b, struct rect *rects) {
	struct spa_meta *m = spa_buffer_find_meta(b, SPA_META_VideoDamage);
	if (!m) return -1;
	struct spa_meta_region *r;
	int n = 0;
	uint32_t W = app->format.size.width, H = app->format.size.height;
	spa_meta_for_each(r, m) {
		if (!spa_meta_region_is_valid(r)) break;
		int64_t x0 = r->region.position.x, y0 = r->region.position.y;
		int64_t x1 = x0 + r->region.size.width, y1 = y0 + r->region.size.height;
		if (x0 < 0) x0 = 0;
		if (y0 < 0) y0 = 0;
		if (x1 > W) x1 = W;
		if (y1 > H) y1 = H;
		if (x1 <= x0 || y1 <= y0) continue;
		if (n == MAX_RECTS) return -1;
		rects[n++] = (struct rect){(uint32_t)x0, (uint32_t)y0, (uint32_t)(x1 - x0), (uint32_t)(y1 - y0)};
	}
	if (app->verbose) fprintf(stderr, "  damage meta: %d region(s)%s\n", n, n ? "" : " (none valid)");
	return n ? n : -1;
}

/* The cursor metadata into the header (and app->shape when a new image came). */
static void read_cursor(struct app *app, struct spa_buffer *b, struct header *h) {
	struct spa_meta_cursor *c = spa_buffer_find_meta_data(b, SPA_META_Cursor, sizeof(*c));
	if (!c) {
		if (app->verbose) fprintf(stderr, "  cursor meta: absent\n");
		return;
	}
	if (!spa_meta_cursor_is_valid(c)) {
		h->flags |= FLAG_HIDDEN;
		if (app->verbose) fprintf(stderr, "  cursor meta: id 0 (not on this stream)\n");
		return;
	}
	h->flags |= FLAG_CURSOR;
	h->cursor_x = c->position.x;
	h->cursor_y = c->position.y;
	h->hot_x = c->hotspot.x;
	h->hot_y = c->hotspot.y;
	struct spa_meta *m = spa_buffer_find_meta(b, SPA_META_Cursor);
	size_t room = m->size;
	if (c->bitmap_offset >= sizeof(*c) && c->bitmap_offset + sizeof(struct spa_meta_bitmap) <= room) {
		struct spa_meta_bitmap *bm = SPA_PTROFF(c, c->bitmap_offset, struct spa_meta_bitmap);
		uint32_t w = bm->size.width, hh = bm->size.height;
		if (app->verbose)
			fprintf(stderr, "  cursor bitmap: format %s %ux%u stride %d offset %u\n",
				spa_debug_type_find_short_name(spa_type_video_format, bm->format), w, hh, bm->stride,
				bm->offset);
		if (w == 0 || hh == 0) { /* no image (Mutter 43: format 0, 0x0 over the bare desktop): nothing drawn */
			h->flags |= FLAG_SHAPE;
			h->shape_w = h->shape_h = 0;
			return;
		}
		int order[4]; /* byte index of R, G, B, A in a source pixel */
		switch (bm->format) {
		case SPA_VIDEO_FORMAT_RGBA: order[0] = 0; order[1] = 1; order[2] = 2; order[3] = 3; break;
		case SPA_VIDEO_FORMAT_BGRA: order[0] = 2; order[1] = 1; order[2] = 0; order[3] = 3; break;
		case SPA_VIDEO_FORMAT_ARGB: order[0] = 1; order[1] = 2; order[2] = 3; order[3] = 0; break;
		case SPA_VIDEO_FORMAT_ABGR: order[0] = 3; order[1] = 2; order[2] = 1; order[3] = 0; break;
		default: return; /* not a format we know: keep the last image */
		}
		if (w > MAX_CURSOR || hh > MAX_CURSOR || bm->stride < (int32_t)(w * 4)) return;
		size_t end = (size_t)c->bitmap_offset + bm->offset + (size_t)bm->stride * (hh - 1) + w * 4;
		if (bm->offset < sizeof(*bm) || end > room) return;
		const uint8_t *src = SPA_PTROFF(bm, bm->offset, const uint8_t);
		for (uint32_t y = 0; y < hh; y++) {
			const uint8_t *row = src + (size_t)bm->stride * y;
			uint8_t *dst = app->shape + (size_t)y * w * 4;
			for (uint32_t x = 0; x < w; x++)
				for (int k = 0; k < 4; k++) dst[x * 4 + k] = row[x * 4 + order[k]];
		}
		h->flags |= FLAG_SHAPE;
		h->shape_w = w;
		h->shape_h = hh;
	}
	if (app->verbose)
		fprintf(stderr, "  cursor meta: id %u at %d,%d hotspot %d,%d bitmap_offset %u\n", c->id, c->position.x,
			c->position.y, c->hotspot.x, c->hotspot.y, c->bitmap_offset);
}

/* Tiles of `pixels` that differ from app->last, as at most MAX_RECTS rectangles (runs of tiles per tile row,
 * joined with the run above when they span the same columns); -1 when they would be more. */
static int compare_frame(struct app *app, const uint8_t *pixels, size_t stride, struct rect *rects) {
	uint32_t W = app->format.size.width, H = app->format.size.height;
	uint32_t cols = (W + TILE - 1) / TILE;
	uint8_t changed[(MAX_SIDE + TILE - 1) / TILE];
	int n = 0, above = 0; /* rects [above, n) end at the previous tile row */
	for (uint32_t ty = 0; ty * TILE < H; ty++) {
		uint32_t y0 = ty * TILE, y1 = y0 + TILE < H ? y0 + TILE : H;
		int any = 0;
		memset(changed, 0, cols);
		for (uint32_t y = y0; y < y1; y++) {
			const uint8_t *now = pixels + stride * y, *was = app->last + (size_t)W * 4 * y;
			if (!memcmp(now, was, (size_t)W * 4)) continue;
			for (uint32_t c = 0; c < cols; c++) {
				if (changed[c]) continue;
				uint32_t x0 = c * TILE, w = (x0 + TILE < W ? TILE : W - x0) * 4;
				if (memcmp(now + (size_t)x0 * 4, was + (size_t)x0 * 4, w)) changed[c] = any = 1;
			}
		}
		int row_start = n;
		for (uint32_t c = 0; any && c < cols;) {
			if (!changed[c]) { c++; continue; }
			uint32_t c1 = c;
			while (c1 < cols && changed[c1]) c1++;
			uint32_t x = c * TILE, w = (c1 * TILE < W ? c1 * TILE : W) - x;
			int joined = 0;
			for (int i = above; i < row_start; i++) {
				if (rects[i].x == x && rects[i].w == w && rects[i].y + rects[i].h == y0) {
					rects[i].h += y1 - y0;
					/* keep the joined rect among those ending at this row: swap it to the end */
					struct rect t = rects[i];
					rects[i] = rects[row_start - 1];
					rects[row_start - 1] = t;
					row_start--;
					joined = 1;
					break;
				}
			}
			if (!joined) {
				if (n == MAX_RECTS) return -1;
				rects[n++] = (struct rect){x, y0, w, y1 - y0};
			}
			c = c1;
		}
		above = row_start;
		if (!any) above = n;
	}
	return n;
}

/* Bring app->last up to `pixels` inside `rects` (or everywhere when n < 0). */
static void keep(struct app *app, const uint8_t *pixels, size_t stride, const struct rect *rects, int n) {
	uint32_t W = app->format.size.width, H = app->format.size.height;
	if (n < 0) {
		for (uint32_t y = 0; y < H; y++) memcpy(app->last + (size_t)W * 4 * y, pixels + stride * y, (size_t)W * 4);
		return;
	}
	for (int i = 0; i < n; i++)
		for (uint32_t y = rects[i].y; y < rects[i].y + rects[i].h; y++)
			memcpy(app->last + ((size_t)W * y + rects[i].x) * 4, pixels + stride * y + (size_t)rects[i].x * 4,
			       (size_t)rects[i].w * 4);
}

static void on_process(void *data) {
	struct app *app = data;
	if (app->stopping) return;
	struct pw_buffer *pwb = pw_stream_dequeue_buffer(app->stream);
	if (!pwb) return;
	struct spa_buffer *b = pwb->buffer;
	uint32_t W = app->format.size.width, H = app->format.size.height;
	struct header h = {.magic = MAGIC, .version = VERSION, .width = W, .height = H};
	struct rect rects[MAX_RECTS];
	struct spa_data *d = &b->datas[0];
	const uint8_t *pixels = NULL;
	size_t stride = 0;
	struct spa_meta_header *mh = spa_buffer_find_meta_data(b, SPA_META_Header, sizeof(*mh));
	int corrupted = mh && (mh->flags & SPA_META_HEADER_FLAG_CORRUPTED);
	if (app->have_format && d->data && d->chunk && d->chunk->size > 0 && d->maxsize > 0 && !corrupted) {
		stride = d->chunk->stride > 0 ? (size_t)d->chunk->stride : (size_t)W * 4;
		size_t offset = d->chunk->offset % d->maxsize;
		if (stride >= (size_t)W * 4 && offset + stride * (H - 1) + (size_t)W * 4 <= d->maxsize)
			pixels = SPA_PTROFF(d->data, offset, const uint8_t);
		else if (app->verbose)
			fprintf(stderr, "  buffer too small for %ux%u (stride %zu, maxsize %u)\n", W, H, stride, d->maxsize);
	}
	if (app->verbose)
		fprintf(stderr, "buffer %u: type %s chunk size %u stride %d%s%s\n", app->sequence,
			spa_debug_type_find_short_name(spa_type_data_type, d->type), d->chunk ? d->chunk->size : 0,
			d->chunk ? d->chunk->stride : 0, corrupted ? " corrupted" : "", mh ? "" : " (no header meta)");
	int n = read_damage(app, b, rects);
	read_cursor(app, b, &h);
	uint64_t area = 0; /* of the rectangles, when they may be written alone */
	if (pixels && app->damage_pixels && app->sent_full) {
		if (n < 0 && (n = compare_frame(app, pixels, stride, rects)) >= 0) h.flags |= FLAG_COMPUTED;
		for (int i = 0; i < n; i++) area += (uint64_t)rects[i].w * rects[i].h;
		if (area > (uint64_t)W * H) n = -1; /* overlapping compositor rectangles: the whole frame is cheaper */
		if (n == 0) pixels = NULL; /* the same picture again */
	}
	if (pixels) {
		if (n > 0) {
			h.flags |= FLAG_DAMAGE;
			h.n_rects = (uint32_t)n;
		}
		/* Most of the frame changed (video): the whole frame, with the rectangles as its damage. The reader
		 * then reads it straight into a frame of its own, where rectangles are read aside and pasted into a
		 * frame first brought up to date (two more copies of what changed, the largest cost of a video frame). */
		int whole = n <= 0 || !app->damage_pixels || !app->sent_full || area * 2 > (uint64_t)W * H;
		h.flags |= whole ? FLAG_FULL : FLAG_RECTS;
		if (app->damage_pixels) keep(app, pixels, stride, rects, (h.flags & FLAG_COMPUTED) ? n : -1);
	}
	int32_t cursor[3] = {(int32_t)(h.flags & (FLAG_CURSOR | FLAG_HIDDEN)), h.cursor_x, h.cursor_y};
	if (!(h.flags & (FLAG_FULL | FLAG_RECTS | FLAG_SHAPE)) && !memcmp(cursor, app->last_cursor, sizeof(cursor))) {
		pw_stream_queue_buffer(app->stream, pwb); /* nothing new for the agent: no record, no wake-up */
		return;
	}
	memcpy(app->last_cursor, cursor, sizeof(cursor));
	h.sequence = app->sequence++;
	static struct batch out; /* one record at a time, from the stream's thread */
	out.fd = app->out;
	out.failed = out.n = 0;
	batch_add(&out, &h, sizeof(h));
	if (h.n_rects) batch_add(&out, rects, sizeof(struct rect) * h.n_rects);
	if ((h.flags & FLAG_SHAPE) && h.shape_w) batch_add(&out, app->shape, (size_t)h.shape_w * h.shape_h * 4);
	if (h.flags & FLAG_FULL) {
		if (stride == (size_t)W * 4) {
			batch_add(&out, pixels, (size_t)W * H * 4);
		} else {
			for (uint32_t y = 0; y < H; y++) batch_add(&out, pixels + stride * y, (size_t)W * 4);
		}
		app->sent_full = 1;
	} else if (h.flags & FLAG_RECTS) {
		for (uint32_t i = 0; i < h.n_rects; i++)
			for (uint32_t y = 0; y < rects[i].h; y++)
				batch_add(&out, pixels + stride * (rects[i].y + y) + (size_t)rects[i].x * 4, (size_t)rects[i].w * 4);
	}
	batch_flush(&out); /* before the buffer goes back to the compositor */
	pw_stream_queue_buffer(app->stream, pwb);
	if (out.failed) quit(app, 0, app->verbose ? "the reader closed the pipe" : NULL);
}

static void on_param_changed(void *data, uint32_t id, const struct spa_pod *param) {
	struct app *app = data;
	if (param == NULL || id != SPA_PARAM_Format) return;
	struct spa_video_info_raw info;
	uint32_t media_type, media_subtype;
	if (spa_format_parse(param, &media_type, &media_subtype) < 0 || media_type != SPA_MEDIA_TYPE_video ||
	    media_subtype != SPA_MEDIA_SUBTYPE_raw || spa_format_video_raw_parse(param, &info) < 0) {
		quit(app, 3, "the node offers no raw video");
		return;
	}
	if (info.format != SPA_VIDEO_FORMAT_BGRx && info.format != SPA_VIDEO_FORMAT_BGRA) {
		quit(app, 3, "the node's format is not BGRx");
		return;
	}
	if (info.size.width == 0 || info.size.height == 0 || info.size.width > MAX_SIDE || info.size.height > MAX_SIDE ||
	    (app->want_w && (info.size.width != app->want_w || info.size.height != app->want_h))) {
		char why[128];
		snprintf(why, sizeof(why), "the stream is %ux%u, expected %ux%u", info.size.width, info.size.height,
			 app->want_w, app->want_h);
		quit(app, 4, why);
		return;
	}
	app->format = info;
	app->have_format = 1;
	app->sent_full = 0;
	if (app->damage_pixels) {
		free(app->last);
		app->last = malloc((size_t)info.size.width * info.size.height * 4);
		if (!app->last) {
			quit(app, 1, "out of memory");
			return;
		}
	}
	if (app->verbose)
		fprintf(stderr, "format: %s %ux%u framerate %u/%u max %u/%u\n",
			spa_debug_type_find_short_name(spa_type_video_format, info.format), info.size.width,
			info.size.height, info.framerate.num, info.framerate.denom, info.max_framerate.num,
			info.max_framerate.denom);
	uint8_t buffer[1024];
	struct spa_pod_builder b = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
	const struct spa_pod *params[4];
	int stride = (int)info.size.width * 4;
	/* At least 8 buffers, as pipewiresrc asks: Mutter drops a frame silently when it finds no free buffer
	 * (and schedules none later). With 4, a session on the headless Mutter 43.8 sometimes got its first frame
	 * and a cursor-only buffer and then nothing while a window appeared (3 runs in 14). */
	params[0] = spa_pod_builder_add_object(&b, SPA_TYPE_OBJECT_ParamBuffers, SPA_PARAM_Buffers,
		SPA_PARAM_BUFFERS_buffers, SPA_POD_CHOICE_RANGE_Int(16, 8, 16),
		SPA_PARAM_BUFFERS_blocks, SPA_POD_Int(1),
		SPA_PARAM_BUFFERS_size, SPA_POD_Int(stride * (int)info.size.height),
		SPA_PARAM_BUFFERS_stride, SPA_POD_Int(stride),
		SPA_PARAM_BUFFERS_dataType, SPA_POD_CHOICE_FLAGS_Int((1 << SPA_DATA_MemFd) | (1 << SPA_DATA_MemPtr)));
	params[1] = spa_pod_builder_add_object(&b, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta,
		SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Header),
		SPA_PARAM_META_size, SPA_POD_Int(sizeof(struct spa_meta_header)));
	params[2] = spa_pod_builder_add_object(&b, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta,
		SPA_PARAM_META_type, SPA_POD_Id(SPA_META_VideoDamage),
		SPA_PARAM_META_size, SPA_POD_CHOICE_RANGE_Int(sizeof(struct spa_meta_region) * 16,
			sizeof(struct spa_meta_region) * 1, sizeof(struct spa_meta_region) * MAX_RECTS));
	params[3] = spa_pod_builder_add_object(&b, SPA_TYPE_OBJECT_ParamMeta, SPA_PARAM_Meta,
		SPA_PARAM_META_type, SPA_POD_Id(SPA_META_Cursor),
		SPA_PARAM_META_size, SPA_POD_CHOICE_RANGE_Int(CURSOR_META_SIZE(64, 64), CURSOR_META_SIZE(1, 1),
			CURSOR_META_SIZE(MAX_CURSOR, MAX_CURSOR)));
	pw_stream_update_params(app->stream, params, 4);
}

static void on_state_changed(void *data, enum pw_stream_state old, enum pw_stream_state state, const char *error) {
	struct app *app = data;
	(void)old;
	if (app->verbose) fprintf(stderr, "stream state: %s\n", pw_stream_state_as_string(state));
	if (state == PW_STREAM_STATE_ERROR) {
		char why[256];
		snprintf(why, sizeof(why), "stream error: %s", error ? error : "unknown");
		quit(app, 5, why);
	} else if (state == PW_STREAM_STATE_UNCONNECTED) {
		quit(app, 6, "the stream was disconnected");
	}
}

static const struct pw_stream_events stream_events = {
	PW_VERSION_STREAM_EVENTS,
	.state_changed = on_state_changed,
	.param_changed = on_param_changed,
	.process = on_process,
};

static void on_signal(void *data, int signal_number) {
	(void)signal_number;
	quit(data, 0, NULL);
}

static int number(const char *text, long max, long *out) {
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno || *end || v < 0 || v > max) return -1;
	*out = v;
	return 0;
}

int main(int argc, char *argv[]) {
	struct app app = {.out = -1};
	long node = -1, remote = -1, out = -1, w = 0, h = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		long *target = !strcmp(a, "--node") ? &node : !strcmp(a, "--remote") ? &remote : !strcmp(a, "--out") ? &out
			: !strcmp(a, "--width") ? &w : !strcmp(a, "--height") ? &h : NULL;
		if (target) {
			if (!v || number(v, 0x7fffffff, target)) {
				fprintf(stderr, "helpline-pwcast: bad value for %s\n", a);
				return 2;
			}
			i++;
		} else if (!strcmp(a, "--pixels") && v) {
			if (strcmp(v, "full") && strcmp(v, "damage")) {
				fprintf(stderr, "helpline-pwcast: --pixels is full or damage\n");
				return 2;
			}
			app.damage_pixels = !strcmp(v, "damage");
			i++;
		} else if (!strcmp(a, "--verbose")) {
			app.verbose = 1;
		} else if (!strcmp(a, "--version")) {
			printf("helpline-pwcast %d\n", VERSION);
			return 0;
		} else {
			fprintf(stderr, "usage: helpline-pwcast --node N --out FD [--remote FD] [--width W --height H] "
				"[--pixels full|damage] [--verbose]\n");
			return 2;
		}
	}
	if (node < 0 || out < 0 || w > MAX_SIDE || h > MAX_SIDE || (w == 0) != (h == 0)) {
		fprintf(stderr, "helpline-pwcast: --node and --out are required; sizes up to %d\n", MAX_SIDE);
		return 2;
	}
	app.out = (int)out;
	app.want_w = (uint32_t)w;
	app.want_h = (uint32_t)h;
	app.shape = malloc(MAX_CURSOR * MAX_CURSOR * 4);
	if (!app.shape) return 1;
	signal(SIGPIPE, SIG_IGN);

	pw_init(&argc, &argv);
	app.loop = pw_main_loop_new(NULL);
	struct pw_loop *loop = pw_main_loop_get_loop(app.loop);
	pw_loop_add_signal(loop, SIGTERM, on_signal, &app);
	pw_loop_add_signal(loop, SIGINT, on_signal, &app);
	struct pw_context *context = pw_context_new(loop, NULL, 0);
	struct pw_core *core = remote >= 0 ? pw_context_connect_fd(context, (int)remote, NULL, 0)
					   : pw_context_connect(context, NULL, 0);
	if (!core) {
		fprintf(stderr, "helpline-pwcast: cannot connect to PipeWire: %s\n", strerror(errno));
		return 7;
	}
	app.stream = pw_stream_new(core, "helpline-pwcast",
		pw_properties_new(PW_KEY_MEDIA_TYPE, "Video", PW_KEY_MEDIA_CATEGORY, "Capture", PW_KEY_MEDIA_ROLE,
				  "Screen", NULL));
	pw_stream_add_listener(app.stream, &app.listener, &stream_events, &app);

	uint8_t buffer[1024];
	struct spa_pod_builder b = SPA_POD_BUILDER_INIT(buffer, sizeof(buffer));
	const struct spa_pod *params[1];
	struct spa_rectangle def = SPA_RECTANGLE(w ? (uint32_t)w : 1920, h ? (uint32_t)h : 1080);
	struct spa_rectangle min = SPA_RECTANGLE(1, 1), max = SPA_RECTANGLE(MAX_SIDE, MAX_SIDE);
	struct spa_fraction rate = SPA_FRACTION(60, 1), rmin = SPA_FRACTION(0, 1), rmax = SPA_FRACTION(1000, 1);
	params[0] = spa_pod_builder_add_object(&b, SPA_TYPE_OBJECT_Format, SPA_PARAM_EnumFormat,
		SPA_FORMAT_mediaType, SPA_POD_Id(SPA_MEDIA_TYPE_video),
		SPA_FORMAT_mediaSubtype, SPA_POD_Id(SPA_MEDIA_SUBTYPE_raw),
		SPA_FORMAT_VIDEO_format, SPA_POD_CHOICE_ENUM_Id(3, SPA_VIDEO_FORMAT_BGRx, SPA_VIDEO_FORMAT_BGRx,
								SPA_VIDEO_FORMAT_BGRA),
		SPA_FORMAT_VIDEO_size, SPA_POD_CHOICE_RANGE_Rectangle(&def, &min, &max),
		SPA_FORMAT_VIDEO_framerate, SPA_POD_CHOICE_RANGE_Fraction(&rate, &rmin, &rmax));
	if (pw_stream_connect(app.stream, PW_DIRECTION_INPUT, (uint32_t)node,
			      PW_STREAM_FLAG_AUTOCONNECT | PW_STREAM_FLAG_MAP_BUFFERS | PW_STREAM_FLAG_DONT_RECONNECT,
			      params, 1) < 0) {
		fprintf(stderr, "helpline-pwcast: cannot connect to node %ld\n", node);
		return 7;
	}
	pw_main_loop_run(app.loop);
	pw_stream_destroy(app.stream);
	pw_core_disconnect(core);
	pw_context_destroy(context);
	pw_main_loop_destroy(app.loop);
	pw_deinit();
	free(app.shape);
	free(app.last);
	return app.exit_code;
}
