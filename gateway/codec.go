package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Connect looks codecs up by the content subtype: "application/json" and
// "application/connect+json" (and gRPC-web's "+json") select "json", and
// Connect registers "json; charset=utf-8" as a codec of its own for
// "application/json; charset=utf-8". Both are replaced, or the charset
// spelling would keep the lenient default.
const (
	codecNameJSON            = "json"
	codecNameJSONCharsetUTF8 = "json; charset=utf-8"
)

// withStrictJSON replaces connect-go's JSON codecs with strictJSONCodec. The
// binary "proto" codec is left alone, so gRPC and binary Connect clients keep
// protobuf's forward compatibility (unknown field numbers are carried, not
// refused).
func withStrictJSON() connect.HandlerOption {
	return connect.WithHandlerOptions(
		connect.WithCodec(strictJSONCodec{name: codecNameJSON}),
		connect.WithCodec(strictJSONCodec{name: codecNameJSONCharsetUTF8}),
	)
}

// strictJSONCodec is connect-go's protojson codec with one difference: it
// refuses unknown fields and unknown enum names instead of dropping them.
// connect-go discards them so that clients and servers need not share a
// schema version, but for a JSON caller that silently changes the request:
// "acks":"wal" (instead of "ACKS_WAL") became ACKS_UNSPECIFIED and the caller
// got the topic's default durability, and a misspelt "partitoin" placed the
// records by key. JSON callers are people and scripts, who are better served
// by a refusal that names the mistake. Marshalling is exactly connect-go's
// (protojson.MarshalOptions{}, so unpopulated fields are omitted), keeping
// responses byte-for-byte what they were.
type strictJSONCodec struct{ name string }

// Name is the content subtype the codec serves.
func (c strictJSONCodec) Name() string { return c.name }

// Marshal encodes message as protojson, as connect-go's default codec does.
func (c strictJSONCodec) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, errNotProtoMessage(message)
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

// MarshalAppend is Marshal appending to dst; connect-go uses it, when a codec
// has it, to reuse its buffers.
func (c strictJSONCodec) MarshalAppend(dst []byte, message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, errNotProtoMessage(message)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

// MarshalStable is Marshal with insignificant whitespace removed, as
// connect-go's default codec does (protojson varies its whitespace on
// purpose); connect-go uses it for the query string of GET requests.
func (c strictJSONCodec) MarshalStable(message any) ([]byte, error) {
	b, err := c.Marshal(message)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// IsBinary reports that the codec's output is text.
func (c strictJSONCodec) IsBinary() bool { return false }

// Unmarshal decodes protojson into message, refusing unknown fields and
// unknown enum names. Its error is wrapped by connect-go as InvalidArgument
// ("unmarshal message: ..."), so it is a plain error: a *connect.Error would
// have its code printed into the message.
func (c strictJSONCodec) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return errNotProtoMessage(message)
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	err := protojson.UnmarshalOptions{}.Unmarshal(data, m)
	if err == nil {
		return nil
	}
	md := m.ProtoReflect().Descriptor()
	// protojson's message gives a byte position and the raw token but not
	// what would have been valid, and its wording is deliberately unstable,
	// so it is not parsed: the JSON is walked again against the descriptor
	// to find the mistake. This costs nothing on the success path.
	if perr := diagnoseJSON(data, md); perr != nil {
		return perr
	}
	return fmt.Errorf("invalid JSON for %s: %w", md.FullName(), err)
}

func errNotProtoMessage(message any) error {
	return fmt.Errorf("%T is not a proto.Message", message)
}

// diagnoseJSON walks data as a JSON object of message md and returns the
// first unknown field or unknown enum name, in document order, as an error
// that names it and lists what is valid. It returns nil when it finds
// neither (a syntax error, a value of the wrong type, a duplicate field...),
// leaving protojson's own error to be reported.
func diagnoseJSON(data []byte, md protoreflect.MessageDescriptor) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := jsonWalker{dec: dec}
	tok, err := dec.Token()
	if err != nil {
		return nil
	}
	w.message(tok, md, "")
	return w.found
}

// jsonWalker reads JSON tokens in step with message descriptors. It stops at
// the first problem it recognises (found) or at the first token it cannot
// make sense of (stop), and never reports errors of its own: it is only a
// better explanation of a failure protojson has already detected.
type jsonWalker struct {
	dec   *json.Decoder
	found error
	stop  bool
}

func (w *jsonWalker) next() (json.Token, bool) {
	if w.stop || w.found != nil {
		return nil, false
	}
	tok, err := w.dec.Token()
	if err != nil {
		w.stop = true
		return nil, false
	}
	return tok, true
}

// message walks the object that starts with tok as message md; path names
// the object in the request ("" for the request itself).
func (w *jsonWalker) message(tok json.Token, md protoreflect.MessageDescriptor, path string) {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		// Well-known types have JSON forms of their own (a timestamp is
		// a string, a Struct is any object): protojson checks them.
		w.skip(tok)
		return
	}
	if tok != json.Delim('{') {
		// A value of the wrong type: protojson's error says so.
		w.skip(tok)
		w.stop = true
		return
	}
	fields := md.Fields()
	for w.dec.More() {
		ktok, ok := w.next()
		if !ok {
			return
		}
		key, _ := ktok.(string)
		// protojson accepts the JSON name and the proto name.
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByTextName(key)
		}
		if fd == nil {
			w.found = unknownFieldError(key, md, path)
			return
		}
		vtok, ok := w.next()
		if !ok {
			return
		}
		w.field(vtok, fd, joinPath(path, key))
	}
	w.next() // '}'
}

// field walks the value tok of field fd.
func (w *jsonWalker) field(tok json.Token, fd protoreflect.FieldDescriptor, path string) {
	switch {
	case tok == nil:
		// null leaves any field unset.
	case fd.IsMap():
		if tok != json.Delim('{') {
			w.skip(tok)
			return
		}
		for w.dec.More() {
			ktok, ok := w.next()
			if !ok {
				return
			}
			key, _ := ktok.(string)
			vtok, ok := w.next()
			if !ok {
				return
			}
			w.singular(vtok, fd.MapValue(), path+"["+strconv.Quote(key)+"]")
		}
		w.next() // '}'
	case fd.IsList():
		if tok != json.Delim('[') {
			w.skip(tok)
			return
		}
		for i := 0; w.dec.More(); i++ {
			etok, ok := w.next()
			if !ok {
				return
			}
			w.singular(etok, fd, path+"["+strconv.Itoa(i)+"]")
		}
		w.next() // ']'
	default:
		w.singular(tok, fd, path)
	}
}

// singular walks one value tok of fd's type (a list element, a map value
// or the value of a singular field).
func (w *jsonWalker) singular(tok json.Token, fd protoreflect.FieldDescriptor, path string) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if tok == nil {
			return
		}
		w.message(tok, fd.Message(), path)
	case protoreflect.EnumKind:
		ed := fd.Enum()
		// A number is accepted as is: proto3 enums are open, so a newer
		// client may send a value this gateway does not know by name.
		if s, ok := tok.(string); ok && ed.Values().ByName(protoreflect.Name(s)) == nil {
			w.found = enumValueError(s, ed, path)
		}
		w.skip(tok)
	default:
		w.skip(tok)
	}
}

// skip consumes the rest of the value that starts with tok.
func (w *jsonWalker) skip(tok json.Token) {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return
	}
	for depth := 1; depth > 0; {
		t, err := w.dec.Token()
		if err != nil {
			if err != io.EOF {
				w.stop = true
			}
			return
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// unknownFieldError names the field, the message and the fields the message
// has, by JSON name with the proto name alongside when it differs (both are
// accepted), in declaration order.
func unknownFieldError(key string, md protoreflect.MessageDescriptor, path string) error {
	fields := md.Fields()
	names := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		n := fd.JSONName()
		if tn := fd.TextName(); tn != n {
			n += " (" + tn + ")"
		}
		names = append(names, n)
	}
	where := ""
	if path != "" {
		where = " at " + strconv.Quote(path)
	}
	return fmt.Errorf("unknown field %q in %s%s: valid fields are %s", key, md.FullName(), where, strings.Join(names, ", "))
}

// enumValueError names the value, the enum, the field and the enum's names.
func enumValueError(value string, ed protoreflect.EnumDescriptor, path string) error {
	values := ed.Values()
	names := make([]string, 0, values.Len())
	for i := range values.Len() {
		names = append(names, string(values.Get(i).Name()))
	}
	return fmt.Errorf("invalid value %q for enum %s in field %q: valid names are %s", value, ed.FullName(), path, strings.Join(names, ", "))
}
