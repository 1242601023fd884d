package nbd

import "github.com/pojntfx/go-nbd/pkg/protocol"

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).
// Values go-nbd's protocol package already names are taken from it; the rest
// (structured replies, meta contexts, the newer commands) are defined here.

// Magic numbers.
const (
	magicInit            = protocol.NEGOTIATION_MAGIC_OLDSTYLE // "NBDMAGIC"
	magicOption          = protocol.NEGOTIATION_MAGIC_OPTION   // "IHAVEOPT"
	magicOptionReply     = protocol.NEGOTIATION_MAGIC_REPLY
	magicRequest         = protocol.TRANSMISSION_MAGIC_REQUEST
	magicSimpleReply     = protocol.TRANSMISSION_MAGIC_REPLY
	magicStructuredReply = uint32(0x668e33ef)
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE
	flagNoZeroes      = uint16(1 << 1)

	clientFlagFixedNewstyle = uint32(1 << 0)
	clientFlagNoZeroes      = uint32(1 << 1)
)

// Options.
const (
	optExportName      = uint32(1)
	optAbort           = protocol.NEGOTIATION_ID_OPTION_ABORT
	optList            = protocol.NEGOTIATION_ID_OPTION_LIST
	optStartTLS        = uint32(5)
	optInfo            = protocol.NEGOTIATION_ID_OPTION_INFO
	optGo              = protocol.NEGOTIATION_ID_OPTION_GO
	optStructuredReply = uint32(8)
	optListMetaContext = uint32(9)
	optSetMetaContext  = uint32(10)
)

// Option reply types.
const (
	repAck         = protocol.NEGOTIATION_TYPE_REPLY_ACK
	repServer      = protocol.NEGOTIATION_TYPE_REPLY_SERVER
	repInfo        = protocol.NEGOTIATION_TYPE_REPLY_INFO
	repMetaContext = uint32(4)

	repErrUnsup    = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED
	repErrPolicy   = uint32(1<<31 | 2)
	repErrInvalid  = uint32(1<<31 | 3)
	repErrUnknown  = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
	repErrShutdown = uint32(1<<31 | 7)
)

// Info types for NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport    = protocol.NEGOTIATION_TYPE_INFO_EXPORT
	infoName      = protocol.NEGOTIATION_TYPE_INFO_NAME
	infoBlockSize = protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE
)

// Transmission flags.
const (
	tflagHasFlags        = protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS
	tflagReadOnly        = uint16(1 << 1)
	tflagSendFlush       = uint16(1 << 2)
	tflagSendFUA         = uint16(1 << 3)
	tflagSendTrim        = uint16(1 << 5)
	tflagSendWriteZeroes = uint16(1 << 6)
	tflagSendDF          = uint16(1 << 7)
	tflagCanMultiConn    = protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN
)

// Commands.
const (
	cmdRead        = protocol.TRANSMISSION_TYPE_REQUEST_READ
	cmdWrite       = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	cmdDisc        = protocol.TRANSMISSION_TYPE_REQUEST_DISC
	cmdFlush       = uint16(3)
	cmdTrim        = uint16(4)
	cmdWriteZeroes = uint16(6)
	cmdBlockStatus = uint16(7)
)

// Command flags.
const (
	cmdFlagFUA    = uint16(1 << 0)
	cmdFlagNoHole = uint16(1 << 1)
	cmdFlagDF     = uint16(1 << 2)
	cmdFlagReqOne = uint16(1 << 3)
)

// Structured reply flags and chunk types.
const (
	replyFlagDone = uint16(1 << 0)

	replyNone        = uint16(0)
	replyOffsetData  = uint16(1)
	replyOffsetHole  = uint16(2)
	replyBlockStatus = uint16(5)
	replyError       = uint16(1<<15 | 1)
)

// Error values sent in replies. They are the protocol's, not the host's
// errno numbers (which happen to agree on Linux).
const (
	errPerm     = protocol.TRANSMISSION_ERROR_EPERM
	errIO       = uint32(5)
	errInval    = protocol.TRANSMISSION_ERROR_EINVAL
	errNoSpc    = uint32(28)
	errShutdown = uint32(108)
)

// base:allocation context: the one meta context this server knows.
const (
	metaBaseAllocation   = "base:allocation"
	metaBaseAllocationID = uint32(1)
	stateHole            = uint32(1 << 0)
	stateZero            = uint32(1 << 1)
)

// Sizes of fixed wire structures.
const (
	optionHeaderLen     = 16 // magic 8, option 4, length 4
	requestHeaderLen    = 28 // magic 4, flags 2, type 2, handle 8, offset 8, length 4
	simpleReplyLen      = 16 // magic 4, error 4, handle 8
	structuredHeaderLen = 20 // magic 4, flags 2, type 2, handle 8, length 4
	maxStringLen        = 4096
)
