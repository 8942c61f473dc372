/** Limits of the API that the web UI checks before sending (this module imports nothing, so the browser bundle takes it as is). */

/** The largest ISO an upload (POST /disks/upload) may be: a dual-layer DVD's worth and then some. */
export const MAX_ISO_UPLOAD = 16 * 1024 ** 3;
