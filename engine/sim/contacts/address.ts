// How a contact names the remote devices it holds Signal sessions with.
//
// Rule: the sender's *device* JID, normalised to its LID form, written the way
// Baileys' `jidToSignalProtocolAddress` writes a LID JID: `<lidUser>_1.<device>`
// (domain type 1 = LID; device 0 when the JID has none). Examples:
//   `111:3@lid`            -> `111_1.3`
//   `15550001:3@s.whatsapp.net` with PN 15550001 -> LID 111  -> `111_1.3`
//   `111@lid`              -> `111_1.0`
// Why LID: an account may send to a contact by PN or by LID (and the server may
// relay with `from` in either form); both must land in one session, or the
// second form would need a new pkmsg and the first session's ratchet would be
// orphaned. Why Baileys' spelling: the same device then has the same address
// string on both sides, which keeps logs and stores comparable.
import { jidDecode } from '@whiskeysockets/baileys'
import { ContactError } from './errors.js'
import { ProtocolAddress } from './libsignal.js'

/** A Signal address string `<name>.<device>`, e.g. `111_1.3`. */
export type SignalAddress = string

/**
 * Maps a PN user JID (`15550001@s.whatsapp.net`, no device) to its LID user JID
 * (`111@lid`), or undefined when the account is unknown.
 */
export type LidForPn = (pnUserJid: string) => string | undefined

const LID_DOMAIN = 1

/** The Signal address a contact uses for the device `deviceJid` (PN or LID form). */
export function signalAddressFor(deviceJid: string, lidForPn: LidForPn): SignalAddress {
	const decoded = jidDecode(deviceJid)
	if (!decoded?.user) throw new ContactError('bad_address', `not a device JID: ${JSON.stringify(deviceJid)}`)
	const device = decoded.device ?? 0
	let lidUser: string
	if (decoded.server === 'lid') {
		lidUser = decoded.user
	} else if (decoded.server === 's.whatsapp.net') {
		const lid = lidForPn(`${decoded.user}@s.whatsapp.net`)
		const lidDecoded = lid === undefined ? undefined : jidDecode(lid)
		if (!lidDecoded?.user || lidDecoded.server !== 'lid') {
			// Refuse rather than fall back to a PN-named session: a PN session would
			// silently split one device's ratchet into two (see the rule above).
			throw new ContactError('bad_address', `no LID known for ${deviceJid} (lookup gave ${String(lid)})`)
		}
		lidUser = lidDecoded.user
	} else {
		throw new ContactError('bad_address', `unsupported server in ${deviceJid}: only @lid and @s.whatsapp.net`)
	}
	return lidAddress(lidUser, device)
}

/** The address of device `device` of the account whose LID user part is `lidUser`. */
export function lidAddress(lidUser: string, device: number): SignalAddress {
	if (!/^\d+$/.test(lidUser) || !Number.isInteger(device) || device < 0) {
		throw new ContactError('bad_address', `bad LID device ${JSON.stringify(lidUser)}:${device}`)
	}
	return `${lidUser}_${LID_DOMAIN}.${device}`
}

/** Parses an address string, turning libsignal's bare Error into a ContactError. */
export function parseSignalAddress(address: SignalAddress): InstanceType<typeof ProtocolAddress> {
	if (!/^[^.]+\.\d+$/.test(address)) {
		throw new ContactError('bad_address', `not a Signal address (name.device): ${JSON.stringify(address)}`)
	}
	return ProtocolAddress.from(address)
}
