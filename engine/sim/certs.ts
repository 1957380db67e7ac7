import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Curve, proto, type KeyPair } from '@whiskeysockets/baileys'
import { generate } from 'selfsigned'
import { writeFileAtomic } from './fsutil.js'

/** Serial Baileys expects as the intermediate's issuer (WA_CERT_DETAILS.SERIAL). */
const ROOT_SERIAL = 0
const INTERMEDIATE_SERIAL = 1
const LEAF_SERIAL = 2

export interface SimKeys {
	/** Root of the sandbox trust chain: clients install `root.public` as WA_CERT_DETAILS.PUBLIC_KEY. */
	root: KeyPair
	/** Noise static key of the server; the leaf certificate vouches for it. */
	serverStatic: KeyPair
	/** Encoded proto.CertChain sent inside every ServerHello. */
	certChain: Uint8Array
	tls: { key: string; cert: string }
	files: { rootPublicKey: string; rootPublicKeyHex: string; caCert: string }
}

interface StoredKeyPair {
	public: string
	private: string
}

const toStored = (k: KeyPair): StoredKeyPair => ({
	public: Buffer.from(k.public).toString('base64'),
	private: Buffer.from(k.private).toString('base64')
})
const fromStored = (k: StoredKeyPair): KeyPair => ({
	public: Buffer.from(k.public, 'base64'),
	private: Buffer.from(k.private, 'base64')
})

function signedCert(details: proto.CertChain.NoiseCertificate.IDetails, signer: KeyPair) {
	const encoded = proto.CertChain.NoiseCertificate.Details.encode(details).finish()
	return { details: encoded, signature: Curve.sign(signer.private, encoded) }
}

/**
 * Root -> intermediate -> leaf, each signature real. rc14's Curve.verify does not
 * actually reject bad signatures, so correctness here is on us, not on the client.
 */
export function buildCertChain(root: KeyPair, serverStatic: KeyPair): Uint8Array {
	const intermediate = Curve.generateKeyPair()
	const now = Math.floor(Date.now() / 1000)
	const year = 365 * 24 * 3600
	const intermediateCert = signedCert(
		{
			serial: INTERMEDIATE_SERIAL,
			// Baileys compares this to WA_CERT_DETAILS.SERIAL (0); protobuf omits zero
			// defaults unless set explicitly, which fails "certification match failed".
			issuerSerial: ROOT_SERIAL,
			key: intermediate.public,
			notBefore: now - 3600,
			notAfter: now + year
		},
		root
	)
	const leafCert = signedCert(
		{
			serial: LEAF_SERIAL,
			issuerSerial: INTERMEDIATE_SERIAL,
			key: serverStatic.public,
			notBefore: now - 3600,
			notAfter: now + year
		},
		intermediate
	)
	return proto.CertChain.encode({ intermediate: intermediateCert, leaf: leafCert }).finish()
}

async function makeTlsCert(): Promise<{ key: string; cert: string }> {
	const now = new Date()
	const res = await generate([{ name: 'commonName', value: 'wa-sim.localhost' }], {
		keySize: 2048,
		notBeforeDate: new Date(now.getTime() - 3600_000),
		notAfterDate: new Date(now.getTime() + 10 * 365 * 24 * 3600_000),
		extensions: [
			{ name: 'basicConstraints', cA: true },
			{ name: 'keyUsage', digitalSignature: true, keyEncipherment: true, keyCertSign: true },
			{ name: 'extKeyUsage', serverAuth: true },
			{
				name: 'subjectAltName',
				altNames: [
					{ type: 2, value: 'localhost' },
					{ type: 7, ip: '127.0.0.1' }
				]
			}
		]
	})
	return { key: res.private, cert: res.cert }
}

/**
 * Loads the simulator's long-lived keys from `dataDir`, creating them at first start.
 * The root key and the TLS certificate must outlive restarts: sandbox engines pin them.
 */
export async function loadOrCreateKeys(dataDir: string): Promise<SimKeys> {
	mkdirSync(dataDir, { recursive: true })
	const keysFile = join(dataDir, 'keys.json')
	const files = {
		rootPublicKey: join(dataDir, 'root-public-key.b64'),
		rootPublicKeyHex: join(dataDir, 'root-public-key.hex'),
		caCert: join(dataDir, 'media-ca.pem')
	}
	const tlsKeyFile = join(dataDir, 'media-key.pem')
	let root: KeyPair
	let serverStatic: KeyPair
	if (existsSync(keysFile)) {
		const stored = JSON.parse(readFileSync(keysFile, 'utf8')) as { root: StoredKeyPair; serverStatic: StoredKeyPair }
		root = fromStored(stored.root)
		serverStatic = fromStored(stored.serverStatic)
	} else {
		root = Curve.generateKeyPair()
		serverStatic = Curve.generateKeyPair()
		writeFileAtomic(keysFile, JSON.stringify({ root: toStored(root), serverStatic: toStored(serverStatic) }), 0o600)
	}
	writeFileAtomic(files.rootPublicKey, Buffer.from(root.public).toString('base64') + '\n')
	writeFileAtomic(files.rootPublicKeyHex, Buffer.from(root.public).toString('hex') + '\n')
	let tls: { key: string; cert: string }
	if (existsSync(files.caCert) && existsSync(tlsKeyFile)) {
		tls = { key: readFileSync(tlsKeyFile, 'utf8'), cert: readFileSync(files.caCert, 'utf8') }
	} else {
		tls = await makeTlsCert()
		writeFileAtomic(tlsKeyFile, tls.key, 0o600)
		writeFileAtomic(files.caCert, tls.cert)
	}
	return { root, serverStatic, certChain: buildCertChain(root, serverStatic), tls, files }
}
