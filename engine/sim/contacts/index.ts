// Simulated contacts: people outside the simulator's paired accounts, whose
// Signal state the simulator keeps itself (see contact.ts for the class).
export { lidAddress, signalAddressFor, parseSignalAddress, type SignalAddress, type LidForPn } from './address.js'
export { keyBundleNodes, keyBundleUserNode, toSignalPublicKey, toWirePublicKey, type WireKeyBundle } from './bundle.js'
export { SimContact, type ContactProfile, type EncType, type Encrypted, type SimContactJson } from './contact.js'
export { ContactError, type ContactErrorCode } from './errors.js'
export { decryptMedia, encryptMedia, type EncryptedMedia, type MediaExpectations } from './media.js'
export {
	findMedia,
	mediaMessage,
	textMessage,
	type ContactMediaKind,
	type MediaDetails,
	type MediaLocation,
	type ReceivedMedia
} from './messages.js'
export { CONTACT_STATE_VERSION, type SignalStateJson, type StoreOptions } from './store.js'
