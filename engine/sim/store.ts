import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes, randomInt } from 'node:crypto'
import { Curve, type KeyPair } from '@whiskeysockets/baileys'
import { writeFileAtomic } from './fsutil.js'

export interface PreKey {
	id: number
	pub: string // base64, 32 bytes
}

export interface Device {
	id: number
	keyIndex: number
	noisePub: string
	identityPub: string
	registrationId: number
	signedPreKey: { id: number; pub: string; sig: string }
	preKeys: PreKey[]
	platform: string
	pushName?: string
	pairedAt: number
	lastLoginAt?: number
}

export interface Account {
	phone: string
	lid: string
	pushName?: string
	bizName?: string
	/** The simulated phone's account identity key: it signs every companion's ADV identity. */
	identity: { pub: string; priv: string }
	nextDeviceId: number
	nextKeyIndex: number
	devices: Device[]
	createdAt: number
}

interface StateFile {
	version: 1
	accounts: Account[]
}

const PHONE_RE = /^[1-9][0-9]{6,15}$/

export class InvalidInput extends Error {
	constructor(
		readonly code: string,
		message: string
	) {
		super(message)
	}
}

export function normalizePhone(input: unknown): string {
	if (typeof input !== 'string' && typeof input !== 'number') throw new InvalidInput('INVALID_PHONE', 'phone must be a string of digits')
	const phone = String(input).replace(/^\+/, '').split('@')[0]!.split(':')[0]!
	if (!PHONE_RE.test(phone)) throw new InvalidInput('INVALID_PHONE', `not a phone number: ${String(input)}`)
	return phone
}

/**
 * Accounts and their linked devices, indexed by phone and by LID.
 * In persistent mode every change is written (debounced, atomically) to state.json,
 * so a restarted simulator still knows every paired device.
 */
export class Store {
	private readonly byPhone = new Map<string, Account>()
	private readonly byLid = new Map<string, Account>()
	private saveTimer?: NodeJS.Timeout
	private readonly file?: string

	constructor(dataDir: string | undefined, inMemory: boolean) {
		if (!inMemory && dataDir) {
			this.file = join(dataDir, 'state.json')
			if (existsSync(this.file)) {
				const state = JSON.parse(readFileSync(this.file, 'utf8')) as StateFile
				for (const acc of state.accounts) this.index(acc)
			}
		}
	}

	private index(acc: Account): void {
		this.byPhone.set(acc.phone, acc)
		this.byLid.set(acc.lid, acc)
	}

	accounts(): Account[] {
		return [...this.byPhone.values()]
	}

	getByPhone(phone: string): Account | undefined {
		return this.byPhone.get(phone)
	}

	getByLid(lid: string): Account | undefined {
		return this.byLid.get(lid)
	}

	/** Finds the account behind a user part of either addressing form. */
	getByUser(user: string, server: string): Account | undefined {
		return server === 'lid' ? this.byLid.get(user) : this.byPhone.get(user)
	}

	newLid(): string {
		for (;;) {
			// WhatsApp LIDs are opaque 14-15 digit numbers; keep them disjoint from sim phones.
			const lid = `1${randomInt(10 ** 6, 10 ** 7)}${randomInt(10 ** 6, 10 ** 7)}`
			if (!this.byLid.has(lid)) return lid
		}
	}

	createAccount(phone: string, opts: { pushName?: string; bizName?: string; lid?: string } = {}): Account {
		const existing = this.byPhone.get(phone)
		if (existing) return existing
		const identity: KeyPair = Curve.generateKeyPair()
		const acc: Account = {
			phone,
			lid: opts.lid ?? this.newLid(),
			pushName: opts.pushName,
			bizName: opts.bizName,
			identity: { pub: Buffer.from(identity.public).toString('base64'), priv: Buffer.from(identity.private).toString('base64') },
			nextDeviceId: 1,
			nextKeyIndex: 1,
			devices: [],
			createdAt: Date.now()
		}
		this.index(acc)
		this.changed()
		return acc
	}

	findDevice(acc: Account, id: number): Device | undefined {
		return acc.devices.find(d => d.id === id)
	}

	addDevice(acc: Account, dev: Omit<Device, 'id' | 'keyIndex' | 'pairedAt' | 'preKeys'>): Device {
		const device: Device = { ...dev, id: acc.nextDeviceId++, keyIndex: acc.nextKeyIndex++, pairedAt: Date.now(), preKeys: [] }
		acc.devices.push(device)
		this.changed()
		return device
	}

	removeDevice(acc: Account, id: number): boolean {
		const before = acc.devices.length
		acc.devices = acc.devices.filter(d => d.id !== id)
		this.changed()
		return acc.devices.length !== before
	}

	/** Marks state dirty; persistence is debounced because prekey pops happen per message. */
	changed(): void {
		if (!this.file || this.saveTimer) return
		this.saveTimer = setTimeout(() => {
			this.saveTimer = undefined
			this.flush()
		}, 50)
		this.saveTimer.unref()
	}

	flush(): void {
		if (!this.file) return
		if (this.saveTimer) {
			clearTimeout(this.saveTimer)
			this.saveTimer = undefined
		}
		const state: StateFile = { version: 1, accounts: this.accounts() }
		writeFileAtomic(this.file, JSON.stringify(state))
	}
}

export const randomId = (bytes = 8): string => randomBytes(bytes).toString('hex').toUpperCase()
