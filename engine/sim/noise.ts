import { aesDecryptGCM, aesEncryptGCM, Curve, hkdf, NOISE_MODE, NOISE_WA_HEADER, proto, sha256, type KeyPair } from '@whiskeysockets/baileys'

const EMPTY = Buffer.alloc(0)

function iv(counter: number): Buffer {
	const out = Buffer.alloc(12)
	out.writeUInt32BE(counter >>> 0, 8)
	return out
}

/** Post-handshake cipher: one counter per direction, empty AAD. */
export class Transport {
	private readCounter = 0
	private writeCounter = 0
	constructor(
		private readonly encKey: Buffer,
		private readonly decKey: Buffer
	) {}
	encrypt(plain: Uint8Array): Buffer {
		return aesEncryptGCM(plain, this.encKey, iv(this.writeCounter++), EMPTY)
	}
	decrypt(cipher: Uint8Array): Buffer {
		return aesDecryptGCM(cipher, this.decKey, iv(this.readCounter++), EMPTY)
	}
}

/**
 * Responder side of Noise XX as WhatsApp runs it (mirror of Baileys' noise-handler):
 * the server's ephemeral and static keys go out in ServerHello with the cert chain,
 * the client's static key and ClientPayload come back in ClientFinish.
 */
export class NoiseResponder {
	private hash: Buffer
	private salt: Buffer
	private key: Buffer
	private counter = 0
	private readonly ephemeral: KeyPair = Curve.generateKeyPair()
	private clientEphemeral?: Buffer
	clientStatic?: Buffer

	constructor(
		private readonly serverStatic: KeyPair,
		private readonly certChain: Uint8Array
	) {
		const mode = Buffer.from(NOISE_MODE)
		this.hash = mode.length === 32 ? mode : sha256(mode)
		this.salt = this.hash
		this.key = this.hash
		this.mixHash(NOISE_WA_HEADER)
	}

	private mixHash(data: Uint8Array): void {
		this.hash = sha256(Buffer.concat([this.hash, data]))
	}

	private mixKey(ikm: Uint8Array): void {
		const out = Buffer.from(hkdf(Buffer.from(ikm), 64, { salt: this.salt, info: '' }))
		this.salt = out.subarray(0, 32)
		this.key = out.subarray(32)
		this.counter = 0
	}

	private encrypt(plain: Uint8Array): Buffer {
		const out = aesEncryptGCM(plain, this.key, iv(this.counter++), this.hash)
		this.mixHash(out)
		return out
	}

	private decrypt(cipher: Uint8Array): Buffer {
		const out = aesDecryptGCM(cipher, this.key, iv(this.counter++), this.hash)
		this.mixHash(cipher)
		return out
	}

	/** Consumes ClientHello, returns the encoded ServerHello frame payload. */
	onClientHello(frame: Uint8Array): Uint8Array {
		const msg = proto.HandshakeMessage.decode(frame)
		const clientEphemeral = msg.clientHello?.ephemeral
		if (!clientEphemeral || clientEphemeral.length !== 32) throw new Error('bad ClientHello')
		this.clientEphemeral = Buffer.from(clientEphemeral)
		this.mixHash(this.clientEphemeral)
		this.mixHash(this.ephemeral.public)
		this.mixKey(Curve.sharedKey(this.ephemeral.private, this.clientEphemeral))
		const staticEnc = this.encrypt(this.serverStatic.public)
		this.mixKey(Curve.sharedKey(this.serverStatic.private, this.clientEphemeral))
		const payloadEnc = this.encrypt(this.certChain)
		return proto.HandshakeMessage.encode({
			serverHello: { ephemeral: this.ephemeral.public, static: staticEnc, payload: payloadEnc }
		}).finish()
	}

	/** Consumes ClientFinish; returns the client's payload and the transport cipher. */
	onClientFinish(frame: Uint8Array): { payload: proto.ClientPayload; transport: Transport } {
		const msg = proto.HandshakeMessage.decode(frame)
		const fin = msg.clientFinish
		if (!fin?.static || !fin.payload) throw new Error('bad ClientFinish')
		this.clientStatic = this.decrypt(fin.static)
		this.mixKey(Curve.sharedKey(this.ephemeral.private, this.clientStatic))
		const payload = proto.ClientPayload.decode(this.decrypt(fin.payload))
		const keys = Buffer.from(hkdf(EMPTY, 64, { salt: this.salt, info: '' }))
		// The client writes with the first half and reads with the second.
		return { payload, transport: new Transport(keys.subarray(32), keys.subarray(0, 32)) }
	}
}

/** Splits a byte stream into 3-byte-length-prefixed frames, skipping the client's intro header once. */
export class FrameReader {
	private buf: Buffer = EMPTY
	private introDone = false

	push(data: Buffer): Buffer[] {
		this.buf = this.buf.length ? Buffer.concat([this.buf, data]) : data
		if (!this.introDone) {
			if (this.buf.length < 4) return []
			let offset = 0
			if (this.buf[0] === 0x45 && this.buf[1] === 0x44) {
				// 'ED',0,1,len24,routingInfo precedes the WA header when the client saved routing info
				if (this.buf.length < 7) return []
				const len = (this.buf[4]! << 16) | this.buf.readUInt16BE(5)
				offset = 7 + len
			}
			if (this.buf.length < offset + 4) return []
			if (!this.buf.subarray(offset, offset + 4).equals(NOISE_WA_HEADER)) throw new Error('bad intro header')
			this.buf = this.buf.subarray(offset + 4)
			this.introDone = true
		}
		const frames: Buffer[] = []
		while (this.buf.length >= 3) {
			const size = (this.buf[0]! << 16) | (this.buf[1]! << 8) | this.buf[2]!
			if (this.buf.length < size + 3) break
			frames.push(this.buf.subarray(3, size + 3))
			this.buf = this.buf.subarray(size + 3)
		}
		return frames
	}
}

export function frame(payload: Uint8Array): Buffer {
	const out = Buffer.allocUnsafe(payload.length + 3)
	out[0] = (payload.length >>> 16) & 0xff
	out[1] = (payload.length >>> 8) & 0xff
	out[2] = payload.length & 0xff
	out.set(payload, 3)
	return out
}
