// gguf_meta.mjs - the metadata of a GGUF file (v2/v3) as a plain object, for the JS tests:
// scalars as numbers/strings/booleans, arrays (of scalars or strings) as arrays. Tensors are
// not read.
import fs from "node:fs";
export function readGgufMeta(path) {
  const b = fs.readFileSync(path);
  let o = 0;
  const u32 = () => { const v = b.readUInt32LE(o); o += 4; return v; };
  const u64 = () => { const v = b.readBigUInt64LE(o); o += 8; return Number(v); };
  const str = () => { const n = u64(); const s = b.toString("utf8", o, o + n); o += n; return s; };
  if (b.toString("latin1", 0, 4) !== "GGUF") throw new Error(`${path}: not a GGUF file`);
  o = 4;
  const version = u32();
  if (version < 2) throw new Error(`${path}: GGUF v${version}`);
  u64(); // tensors
  const nkv = u64();
  const scalar = (t) => {
    switch (t) {
      case 0: return b.readUInt8(o++);
      case 1: return b.readInt8(o++);
      case 2: { const v = b.readUInt16LE(o); o += 2; return v; }
      case 3: { const v = b.readInt16LE(o); o += 2; return v; }
      case 4: return u32();
      case 5: { const v = b.readInt32LE(o); o += 4; return v; }
      case 6: { const v = b.readFloatLE(o); o += 4; return v; }
      case 7: return b.readUInt8(o++) !== 0;
      case 8: return str();
      case 10: case 11: { const v = b.readBigInt64LE(o); o += 8; return Number(v); }
      case 12: { const v = b.readDoubleLE(o); o += 8; return v; }
      default: throw new Error(`GGUF type ${t}`);
    }
  };
  const meta = {};
  for (let i = 0; i < nkv; i++) {
    const k = str(), t = u32();
    if (t === 9) {
      const et = u32(), n = u64(), a = new Array(n);
      for (let j = 0; j < n; j++) a[j] = scalar(et);
      meta[k] = a;
    } else meta[k] = scalar(t);
  }
  return meta;
}
