// Decode a stream of RFB FramebufferUpdate messages with noVNC's own decoders and print the framebuffer.
//
// usage: node novnc_decode.mjs NOVNC_PACKAGE_DIR WIDTH HEIGHT < updates > rgbx
// The package is @novnc/novnc: its ES modules in core/ (1.4+) or CommonJS in lib/ (1.3).
// The pixel format is noVNC's own: 32 bpp, depth 24, little endian, shifts 0/8/16.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

// noVNC expects a browser: its logging looks for window.console, its Websock for the
// WebSocket and RTCDataChannel state constants.
globalThis.window = globalThis;
const states = { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 };
globalThis.WebSocket ??= states;
globalThis.DataChannel ??= { CONNECTING: "connecting", OPEN: "open", CLOSING: "closing", CLOSED: "closed" };
globalThis.RTCDataChannel ??= globalThis.DataChannel;

const [root, widthArg, heightArg] = process.argv.slice(2);
const width = Number(widthArg), height = Number(heightArg);

async function load(name) {
    const esm = path.join(root, "core", name);
    const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json")));
    if (pkg.type === "module") {
        return (await import(pathToFileURL(esm).href)).default;
    }
    const mod = createRequire(import.meta.url)(path.join(root, "lib", name));
    return mod.default;
}

const names = { 0: "raw", 1: "copyrect", 5: "hextile", 6: "zlib", 7: "tight", 16: "zrle" };
const decoders = {};
for (const [enc, name] of Object.entries(names)) {
    if (fs.existsSync(path.join(root, "core", "decoders", name + ".js"))) {
        const Decoder = await load(path.join("decoders", name + ".js"));
        decoders[enc] = new Decoder();
    }
}
const Websock = await load("websock.js");

const fb = new Uint8Array(width * height * 4);
const display = {
    fillRect(x, y, w, h, color) {
        for (let yy = y; yy < y + h; yy++) {
            for (let xx = x; xx < x + w; xx++) {
                const i = (yy * width + xx) * 4;
                fb[i] = color[0]; fb[i + 1] = color[1]; fb[i + 2] = color[2]; fb[i + 3] = 255;
            }
        }
    },
    blitImage(x, y, w, h, arr, offset) {
        offset = offset || 0;
        for (let yy = 0; yy < h; yy++) {
            for (let xx = 0; xx < w; xx++) {
                const s = offset + (yy * w + xx) * 4;
                const d = ((y + yy) * width + x + xx) * 4;
                fb[d] = arr[s]; fb[d + 1] = arr[s + 1]; fb[d + 2] = arr[s + 2]; fb[d + 3] = 255;
            }
        }
    },
    copyImage(oldX, oldY, newX, newY, w, h) {
        const copy = fb.slice();
        for (let yy = 0; yy < h; yy++) {
            for (let xx = 0; xx < w; xx++) {
                const s = ((oldY + yy) * width + oldX + xx) * 4;
                const d = ((newY + yy) * width + newX + xx) * 4;
                for (let k = 0; k < 4; k++) fb[d + k] = copy[s + k];
            }
        }
    },
};

const data = new Uint8Array(fs.readFileSync(0));
const sock = new Websock();
sock._rQ = data;
sock._rQbufferSize = data.length;
sock._rQlen = data.length;
sock._rQi = 0;

while (sock._rQi < sock._rQlen) {
    const type = sock.rQshift8();
    if (type !== 0) throw new Error("unexpected server message " + type);
    sock.rQshift8();
    const count = sock.rQshift16();
    for (let i = 0; i < count; i++) {
        const x = sock.rQshift16(), y = sock.rQshift16(), w = sock.rQshift16(), h = sock.rQshift16();
        const enc = sock.rQshift32() | 0;
        if (enc === -224) break;
        const decoder = decoders[enc];
        if (!decoder) throw new Error("no noVNC decoder for encoding " + enc);
        if (!decoder.decodeRect(x, y, w, h, sock, display, 24)) {
            throw new Error("noVNC wanted more data for encoding " + enc);
        }
    }
}
process.stdout.write(fb);
