/**
 * The little of Node's Buffer that the VM spec's checks use (cloud-init.ts:
 * an SSH key's base64 data and user-data's byte length), injected by esbuild
 * so that the wizard runs the API's own schema in the browser unchanged.
 */
class Bytes extends Uint8Array {
  readUInt32BE(offset: number): number {
    return new DataView(this.buffer, this.byteOffset, this.byteLength).getUint32(offset);
  }

  override subarray(start = 0, end = this.length): Bytes {
    const from = Math.min(start, this.length);
    return new Bytes(this.buffer, this.byteOffset + from, Math.max(0, Math.min(end, this.length) - from));
  }

  override toString(encoding?: string): string {
    return encoding === 'latin1' ? String.fromCharCode(...this) : super.toString();
  }
}

const BufferShim = {
  from(text: string, encoding: 'base64'): Bytes {
    if (encoding !== 'base64') throw new Error(`Buffer.from with ${encoding} is not in the browser shim`);
    const binary = atob(text);
    const bytes = new Bytes(binary.length);
    for (let index = 0; index < binary.length; index++) bytes[index] = binary.charCodeAt(index);
    return bytes;
  },
  byteLength(text: string): number {
    return new TextEncoder().encode(text).length;
  },
};

export { BufferShim as Buffer };
