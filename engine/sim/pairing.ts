import { randomBytes, randomInt } from 'node:crypto'
import {
	aesDecryptGCM,
	aesEncryptCTR,
	aesDecryptCTR,
	Curve,
	derivePairingCodeKey,
	getBinaryNodeChild,
	getBinaryNodeChildBuffer,
	hkdf,
	hmacSign,
	proto,
	type BinaryNode
} from '@whiskeysockets/baileys'
import type { Conn } from './conn.js'
import { S_WA, SERVER_JID, unixNow, type SimContext } from './context.js'
import { InvalidInput, normalizePhone, type Account } from './store.js'

const ADV_ACCOUNT_SIG_PREFIX = Buffer.from([6, 0])

export interface PairOptions {
	pushName?: string
	bizName?: string
}

interface PendingCode {
	conn: Conn
	phone: string
	ref: string
	wrappedCompanionEphemeral: Buffer
	/** Unwrapped with the code the phone entered (garbage if the code was wrong). */
	companionEphemeral?: Buffer
	/** Set once the phone has entered the code. */
	primary?: { ephemeral: { public: Buffer; private: Buffer }; account: Account; opts: PairOptions; settle: (r: PairResult) => void }
}

export interface PairResult {
	ok: boolean
	jid?: string
	lid?: string
	error?: string
}

let srvIdSeq = 1
const SERVER_ID_PREFIX = 'sim-'
export const serverId = (): string => `${SERVER_ID_PREFIX}${srvIdSeq++}`
/** True for the id of an IQ the simulator itself sent (so a client's result to it is expected). */
export const isServerId = (id: string | undefined): boolean => !!id?.startsWith(SERVER_ID_PREFIX)

/**
 * Companion linking as the primary phone and the server see it: QR refs,
 * "phone scans QR", the link-code exchange, pair-success and the 515 restart.
 */
export class Pairing {
	private readonly refs = new Map<string, Conn>()
	private readonly codes = new Map<string, PendingCode>() // by ref

	constructor(
		private readonly ctx: SimContext,
		private readonly qrRefCount: number
	) {}

	/** A companion without creds connected: offer it QR refs. */
	startRegistration(conn: Conn, payload: proto.ClientPayload): void {
		conn.phase = 'registering'
		conn.registration = { ...payload.devicePairingData!, pushName: payload.pushName }
		const refs: string[] = []
		for (let i = 0; i < this.qrRefCount; i++) {
			const ref = randomBytes(12).toString('base64')
			refs.push(ref)
			this.refs.set(ref, conn)
		}
		conn.send({
			tag: 'iq',
			attrs: { from: SERVER_JID, type: 'set', id: serverId(), xmlns: 'md' },
			content: [{ tag: 'pair-device', attrs: {}, content: refs.map(ref => ({ tag: 'ref', attrs: {}, content: Buffer.from(ref) })) }]
		})
	}

	onClose(conn: Conn): void {
		for (const [ref, c] of this.refs) if (c === conn) this.refs.delete(ref)
		for (const [ref, p] of this.codes) {
			if (p.conn === conn) {
				p.primary?.settle({ ok: false, error: 'companion disconnected' })
				this.codes.delete(ref)
			}
		}
	}

	/** Pending registrations, for inspection. */
	pending() {
		const seen = new Set<Conn>()
		for (const c of this.refs.values()) seen.add(c)
		return {
			qr: [...seen].filter(c => c.isOpen).map(c => ({ conn: c.id, since: new Date(c.connectedAt).toISOString() })),
			codes: [...this.codes.values()].map(p => ({ phone: p.phone, conn: p.conn.id, entered: !!p.primary }))
		}
	}

	/** The control-API "phone X scans QR string Q". */
	async scanQr(phoneInput: unknown, qr: unknown, opts: PairOptions): Promise<PairResult> {
		const phone = normalizePhone(phoneInput)
		if (typeof qr !== 'string') throw new InvalidInput('INVALID_QR', 'qr must be the string the client showed')
		// rc14 wraps the fields in a wa.me link: https://wa.me/settings/linked_devices#ref,noise,identity,adv,platform
		const parts = qr.slice(qr.indexOf('#') + 1).split(',')
		if (parts.length < 4) throw new InvalidInput('INVALID_QR', 'qr must be "ref,noiseKey,identityKey,advSecret[,platform]"')
		const [ref, noiseB64, identityB64, advB64] = parts as [string, string, string, string]
		const conn = this.refs.get(ref)
		if (!conn || !conn.isOpen || conn.phase !== 'registering') throw new InvalidInput('QR_NOT_FOUND', 'no waiting companion shows this QR (expired, or already used)')
		const reg = conn.registration!
		if (!conn.clientStatic?.equals(Buffer.from(noiseB64, 'base64')) || !Buffer.from(reg.eIdent ?? []).equals(Buffer.from(identityB64, 'base64'))) {
			throw new InvalidInput('QR_MISMATCH', 'QR keys do not match the companion that received this ref')
		}
		const account = this.ctx.store.createAccount(phone, opts)
		return this.completePairing(conn, account, Buffer.from(advB64, 'base64'), opts)
	}

	/** companion_hello / companion_finish IQs of the link-code flow. */
	async onLinkCodeIq(conn: Conn, node: BinaryNode): Promise<BinaryNode[] | undefined> {
		const reg = getBinaryNodeChild(node, 'link_code_companion_reg')!
		const stage = reg.attrs.stage
		if (stage === 'companion_hello') {
			const phone = normalizePhone(reg.attrs.jid ?? '')
			const wrapped = getBinaryNodeChildBuffer(reg, 'link_code_pairing_wrapped_companion_ephemeral_pub')
			if (!wrapped || wrapped.length < 80) throw new IqFailure(400, 'bad-request')
			const ref = randomBytes(12).toString('base64')
			for (const [r, p] of this.codes) if (p.phone === phone) this.codes.delete(r)
			this.codes.set(ref, { conn, phone, ref, wrappedCompanionEphemeral: Buffer.from(wrapped) })
			conn.phase = 'registering'
			return [{ tag: 'link_code_companion_reg', attrs: {}, content: [{ tag: 'link_code_pairing_ref', attrs: {}, content: Buffer.from(ref) }] }]
		}
		if (stage === 'companion_finish') {
			const ref = Buffer.from(getBinaryNodeChildBuffer(reg, 'link_code_pairing_ref') ?? []).toString()
			const pending = this.codes.get(ref)
			if (!pending?.primary) throw new IqFailure(404, 'item-not-found')
			this.codes.delete(ref)
			const bundle = getBinaryNodeChildBuffer(reg, 'link_code_pairing_wrapped_key_bundle')
			const companionIdentity = Buffer.from(getBinaryNodeChildBuffer(reg, 'companion_identity_public') ?? [])
			const { primary } = pending
			let adv: Buffer
			try {
				adv = this.openKeyBundle(pending, Buffer.from(bundle ?? []), companionIdentity)
			} catch {
				primary.settle({ ok: false, error: 'wrong pairing code' })
				throw new IqFailure(400, 'bad-request')
			}
			// pair-success follows the IQ result, as on the real service.
			setImmediate(() => {
				this.completePairing(conn, primary.account, adv, primary.opts).then(primary.settle, (err: Error) => primary.settle({ ok: false, error: err.message }))
			})
			return undefined
		}
		throw new IqFailure(400, 'bad-request')
	}

	/** The control-API "phone X enters pairing code C"; resolves once linking finished or failed. */
	async enterCode(phoneInput: unknown, codeInput: unknown, opts: PairOptions, timeoutMs = 15_000): Promise<PairResult> {
		const phone = normalizePhone(phoneInput)
		if (typeof codeInput !== 'string' || !/^[A-Za-z0-9-]{8,9}$/.test(codeInput)) throw new InvalidInput('INVALID_CODE', 'code must be the 8-character pairing code')
		const code = codeInput.replace('-', '').toUpperCase()
		const pending = await this.waitForHello(phone, 5000)
		if (!pending) throw new InvalidInput('NO_PENDING_CODE', `no companion is waiting for a code for ${phone}`)
		if (pending.primary) throw new InvalidInput('CODE_ALREADY_ENTERED', 'a code was already entered for this companion')
		const account = this.ctx.store.createAccount(phone, opts)
		const companionEphemeral = await unwrapWithCode(code, pending.wrappedCompanionEphemeral)
		const ephemeral = Curve.generateKeyPair()
		const salt = randomBytes(32)
		const ivBytes = randomBytes(16)
		const wrappedPrimary = Buffer.concat([salt, ivBytes, aesEncryptCTR(ephemeral.public, await derivePairingCodeKey(code, salt), ivBytes)])
		const result = new Promise<PairResult>(resolve => {
			const timer = setTimeout(() => resolve({ ok: false, error: 'companion did not finish linking' }), timeoutMs)
			timer.unref()
			pending.primary = {
				ephemeral: { public: Buffer.from(ephemeral.public), private: Buffer.from(ephemeral.private) },
				account,
				opts,
				settle: r => {
					clearTimeout(timer)
					resolve(r)
				}
			}
		})
		pending.companionEphemeral = companionEphemeral
		pending.conn.send({
			tag: 'notification',
			attrs: { from: SERVER_JID, type: 'link_code_companion_reg', id: serverId(), t: unixNow() },
			content: [
				{
					tag: 'link_code_companion_reg',
					attrs: { stage: 'primary_hello' },
					content: [
						{ tag: 'link_code_pairing_ref', attrs: {}, content: Buffer.from(pending.ref) },
						{ tag: 'primary_identity_pub', attrs: {}, content: Buffer.from(account.identity.pub, 'base64') },
						{ tag: 'link_code_pairing_wrapped_primary_ephemeral_pub', attrs: {}, content: wrappedPrimary }
					]
				}
			]
		})
		return result
	}

	/** requestPairingCode resolves before its companion_hello reaches us; give it a moment. */
	private async waitForHello(phone: string, timeoutMs: number): Promise<PendingCode | undefined> {
		const deadline = Date.now() + timeoutMs
		for (;;) {
			const pending = [...this.codes.values()].find(p => p.phone === phone && p.conn.isOpen)
			if (pending || Date.now() > deadline) return pending
			await new Promise(r => setTimeout(r, 20))
		}
	}

	/** Decrypts companion_finish's bundle and derives the ADV secret both sides now share. */
	private openKeyBundle(pending: PendingCode, bundle: Buffer, companionIdentity: Buffer): Buffer {
		const primary = pending.primary!
		const companionEphemeral = pending.companionEphemeral!
		const ephemeralShared = Curve.sharedKey(primary.ephemeral.private, companionEphemeral)
		const salt = bundle.subarray(0, 32)
		const ivBytes = bundle.subarray(32, 44)
		const key = hkdf(ephemeralShared, 32, { salt, info: 'link_code_pairing_key_bundle_encryption_key' })
		const plain = aesDecryptGCM(bundle.subarray(44), Buffer.from(key), ivBytes, Buffer.alloc(0))
		const companionIdPub = plain.subarray(0, 32)
		const primaryIdPub = plain.subarray(32, 64)
		const random = plain.subarray(64, 96)
		const accountPub = Buffer.from(primary.account.identity.pub, 'base64')
		if (!primaryIdPub.equals(accountPub) || !companionIdPub.equals(companionIdentity)) throw new Error('identity mismatch in key bundle')
		const identityShared = Curve.sharedKey(Buffer.from(primary.account.identity.priv, 'base64'), companionIdPub)
		return Buffer.from(hkdf(Buffer.concat([ephemeralShared, identityShared, random]), 32, { info: 'adv_secret' }))
	}

	/** pair-success signed by the account key, wait for pair-device-sign, then 515. */
	private async completePairing(conn: Conn, account: Account, advSecret: Buffer, opts: PairOptions): Promise<PairResult> {
		const reg = conn.registration
		if (!reg?.eIdent || !reg.eRegid || !reg.eSkeyId || !reg.eSkeyVal || !reg.eSkeySig) throw new InvalidInput('NOT_REGISTERING', 'companion sent no registration data')
		for (const [ref, c] of this.refs) if (c === conn) this.refs.delete(ref)
		if (opts.bizName !== undefined) account.bizName = opts.bizName
		if (opts.pushName !== undefined) account.pushName = opts.pushName
		const companionIdentity = Buffer.from(reg.eIdent)
		const device = this.ctx.store.addDevice(account, {
			noisePub: conn.clientStatic!.toString('base64'),
			identityPub: companionIdentity.toString('base64'),
			registrationId: Buffer.from(reg.eRegid).readUInt32BE(0),
			signedPreKey: {
				id: Buffer.from(reg.eSkeyId).readUIntBE(0, reg.eSkeyId.length),
				pub: Buffer.from(reg.eSkeyVal).toString('base64'),
				sig: Buffer.from(reg.eSkeySig).toString('base64')
			},
			platform: 'web',
			pushName: reg.pushName ?? undefined
		})
		const deviceDetails = proto.ADVDeviceIdentity.encode({ rawId: randomInt(1, 2 ** 31), timestamp: Math.floor(Date.now() / 1000), keyIndex: device.keyIndex }).finish()
		const accountPriv = Buffer.from(account.identity.priv, 'base64')
		const accountSignature = Curve.sign(accountPriv, Buffer.concat([ADV_ACCOUNT_SIG_PREFIX, deviceDetails, companionIdentity]))
		const signed = proto.ADVSignedDeviceIdentity.encode({
			details: deviceDetails,
			accountSignatureKey: Buffer.from(account.identity.pub, 'base64'),
			accountSignature
		}).finish()
		const identityHmac = proto.ADVSignedDeviceIdentityHMAC.encode({ details: signed, hmac: hmacSign(signed, advSecret) }).finish()
		const jid = `${account.phone}:${device.id}@${S_WA}`
		const lid = `${account.lid}:${device.id}@lid`
		const content: BinaryNode[] = [
			{ tag: 'device-identity', attrs: {}, content: identityHmac },
			{ tag: 'platform', attrs: { name: 'android' } },
			{ tag: 'device', attrs: { jid, lid } }
		]
		if (account.bizName) content.push({ tag: 'biz', attrs: { name: account.bizName } })
		let reply: BinaryNode
		try {
			reply = await conn.request({ tag: 'iq', attrs: { from: SERVER_JID, type: 'set', id: serverId(), t: unixNow() }, content: [{ tag: 'pair-success', attrs: {}, content }] })
		} catch (err) {
			this.ctx.store.removeDevice(account, device.id)
			return { ok: false, error: (err as Error).message }
		}
		const sign = getBinaryNodeChild(getBinaryNodeChild(reply, 'pair-device-sign'), 'device-identity')
		if (reply.attrs.type !== 'result' || !sign) {
			this.ctx.store.removeDevice(account, device.id)
			return { ok: false, error: 'companion rejected pair-success' }
		}
		this.ctx.log.info({ jid, lid }, 'device paired')
		this.ctx.devicesChanged(account)
		conn.send({ tag: 'stream:error', attrs: { code: '515' } })
		conn.close()
		return { ok: true, jid, lid }
	}
}

/** An IQ that must be answered with `<error code text>`. */
export class IqFailure extends Error {
	constructor(
		readonly code: number,
		readonly text: string
	) {
		super(`${code} ${text}`)
	}
}

async function unwrapWithCode(code: string, wrapped: Buffer): Promise<Buffer> {
	const salt = wrapped.subarray(0, 32)
	const ivBytes = wrapped.subarray(32, 48)
	const payload = wrapped.subarray(48, 80)
	return aesDecryptCTR(payload, await derivePairingCodeKey(code, salt), ivBytes)
}
