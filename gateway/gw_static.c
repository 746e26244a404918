/*  gw_static.c - the static files at / (the web page), served by lws's own
    file mount (LWSMPRO_FILE): content types, ETag, If-None-Match -> 304,
    Cache-Control from the mount, "index.html" for a folder, 404 for the
    rest.

    The folder is --static-dir, else GW_WEB_DIR: the source tree's
    gateway/web, compiled in by CMake, so a build tree run from the
    checkout serves the page without a flag.  A missing folder is logged
    and only the API is served.

    Path escape: lws decodes %xx in the path and removes "." and ".."
    segments (and so encoded ones: %2e%2e, %2f) before the mount sees it,
    so a request cannot name a file above the folder.  A symlink inside
    the folder is a different matter: lws opens files with open(2), which
    follows symlinks anywhere.  We refuse that: the file operations lws
    uses are the platform's with the open step guarded - a path under the
    folder is resolved with realpath(3) and must still be under the folder
    (a link to a file inside the folder is fine).  Paths lws opens for
    anything else pass unchanged.

    Content types: lws 4.1's own table knows html, js, css, png, jpeg,
    ico, gif, svg, ttf, woff, xml, json, txt ...; the mount adds what the
    page may need beyond it (wasm, mjs, map, webmanifest) and a fallback,
    application/octet-stream, where lws would otherwise refuse the file.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cm_log.h"
#include "gw_rest.h"

#ifndef GW_WEB_DIR
#define GW_WEB_DIR "/usr/share/corral/web"
#endif

#define CACHE_MAX_AGE 60 //  s a browser may reuse a file before revalidating

static const char *const s_mimes[][2] = {
    {".wasm", "application/wasm"},
    {".mjs", "text/javascript"},
    {".map", "application/json"},
    {".webmanifest", "application/manifest+json"},
    {".md", "text/markdown; charset=utf-8"},
    {".yaml", "application/yaml"},
    {".webp", "image/webp"},
    {".avif", "image/avif"},
    {".js", "text/javascript"},
    {".css", "text/css"},
    {".svg", "image/svg+xml"},
    {"*", "application/octet-stream"}, //  anything else (lws would 415)
};

void gw_static_setup (gw_server_t *self, gw_http_srv_t *hs)
{
    const char *dir = self->cfg->static_dir && *self->cfg->static_dir
                          ? self->cfg->static_dir
                          : GW_WEB_DIR;
    struct stat st;
    errno = 0;
    if (!realpath (dir, hs->root) || stat (hs->root, &st) || !S_ISDIR (st.st_mode)) {
        cm_warn ("static folder %s is not a folder (%s); / serves nothing but the API",
                 dir, errno ? strerror (errno) : "not a directory");
        hs->root[0] = 0;
        hs->rootlen = 0;
        return;
    }
    hs->rootlen = strlen (hs->root);
    size_t n = sizeof s_mimes / sizeof s_mimes[0];
    if (n > GW_STATIC_MIMES) n = GW_STATIC_MIMES;
    for (size_t i = 0; i < n; i++) {
        hs->mimes[i].name = s_mimes[i][0];
        hs->mimes[i].value = s_mimes[i][1];
        hs->mimes[i].next = i + 1 < n ? &hs->mimes[i + 1] : NULL;
    }
    hs->files = (struct lws_http_mount){
        .mountpoint = "/",
        .mountpoint_len = 1,
        .origin = hs->root,
        .def = "index.html",
        .origin_protocol = LWSMPRO_FILE,
        .extra_mimetypes = &hs->mimes[0],
        //  Reusable for a minute, then revalidated by ETag (304).
        .cache_max_age = CACHE_MAX_AGE,
        .cache_reusable = 1,
        .cache_revalidate = 1,
    };
    cm_info ("serving static files from %s", hs->root);
}

//  Under the folder: the folder itself or below it.
static bool inside (const gw_http_srv_t *hs, const char *path)
{
    return strncmp (path, hs->root, hs->rootlen) == 0 &&
           (path[hs->rootlen] == 0 || path[hs->rootlen] == '/');
}

static lws_fop_fd_t guarded_open (const struct lws_plat_file_ops *fops,
                                  const char *filename, const char *vpath,
                                  lws_fop_flags_t *flags)
{
    gw_http_srv_t *hs = lws_container_of (fops, gw_http_srv_t, fops);
    if (!inside (hs, filename)) //  not the file mount's
        return hs->sys_fops->LWS_FOP_OPEN (fops, filename, vpath, flags);
    char real[PATH_MAX];
    if (!realpath (filename, real)) return NULL;
    if (!inside (hs, real)) {
        cm_warn ("refused a static file that resolves outside %s (a symlink?)", hs->root);
        return NULL;
    }
    return hs->sys_fops->LWS_FOP_OPEN (fops, real, vpath, flags);
}

void gw_static_init (gw_http_srv_t *hs, struct lws_context *ctx)
{
    if (!hs->rootlen || hs->ctx) return;
    const struct lws_plat_file_ops *sys = lws_get_fops (ctx);
    if (!sys) return;
    hs->sys_fops = sys;
    hs->fops = *sys;
    hs->fops.LWS_FOP_OPEN = guarded_open;
    hs->ctx = ctx;
    lws_set_fops (ctx, &hs->fops);
}

void gw_static_fini (gw_http_srv_t *hs)
{
    if (!hs->ctx) return;
    lws_set_fops (hs->ctx, hs->sys_fops);
    hs->ctx = NULL;
}
