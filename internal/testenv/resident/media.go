package resident

import (
	"context"
	"errors"
	"fmt"
)

// Image is an attachment the page downloaded and decoded (DownloadImage).
type Image struct {
	// Width and Height are the picture's size as the browser decoded it
	// (createImageBitmap).
	Width    int    `json:"width"`
	Height   int    `json:"height"`
	Bytes    int    `json:"bytes"` // length of the plain (decrypted) file
	Mimetype string `json:"mimetype"`
	// Encrypted: the message named an encrypted file (Matrix spec,
	// Client-Server API: EncryptedFile), which the page decrypted after
	// checking its SHA-256.
	Encrypted bool `json:"encrypted"`
	// Authenticated: it came through authenticated media (MSC3916,
	// /_matrix/client/v1/media/download), not the older v3 endpoint.
	Authenticated bool   `json:"authenticated"`
	SHA256        string `json:"sha256"` // hex SHA-256 of the plain file
}

// DownloadImage downloads the attachment of msg, a "message" event from this
// resident (its url for a plain file, its file for an encrypted one, and its
// mimetype), with the resident's access token; decrypts it if it is
// encrypted (matrix-encrypt-attachment) and checks that the browser decodes
// it as an image.
func (r *Resident) DownloadImage(ctx context.Context, msg Event) (Image, error) {
	url, file := msg.Str("url"), msg.Fields["file"]
	if url == "" && file == nil {
		return Image{}, errors.New("resident downloadImage: the message has neither url nor file")
	}
	args := map[string]any{"url": url, "mimetype": msg.Str("mimetype")}
	if file != nil {
		args["file"] = file
	}
	ev, err := r.Do(ctx, "downloadImage", map[string]any{"args": args})
	if err != nil {
		return Image{}, err
	}
	var out struct {
		Result Image `json:"result"`
	}
	if err := ev.Decode(&out); err != nil {
		return Image{}, fmt.Errorf("decode downloadImage reply: %w", err)
	}
	return out.Result, nil
}

// SendImageOptions describe the picture SendImage generates. Zero values
// mean 64×48 image/png.
type SendImageOptions struct {
	Width, Height int
	Mimetype      string // image/png or image/jpeg
}

// SentImage is what SendImage posted.
type SentImage struct {
	EventID   string `json:"eventId"`
	Encrypted bool   `json:"encrypted"` // the file was encrypted, because the room is
	MXC       string `json:"mxc"`       // the uploaded (cipher)text's content URI
	Bytes     int    `json:"bytes"`     // length of the plain file
	SHA256    string `json:"sha256"`    // hex SHA-256 of the plain file
	Width     int    `json:"width"`
	Height    int    `json:"height"`
	Mimetype  string `json:"mimetype"`
}

// SendImage draws a small picture in the page, uploads it and posts it into
// a joined room as an m.image, as Element sends a photo: in an encrypted
// room (with Encryption) the file is encrypted first and the event carries
// it as "file" (EncryptedFile) instead of "url".
func (r *Resident) SendImage(ctx context.Context, roomID string, opts SendImageOptions) (SentImage, error) {
	args := map[string]any{"roomId": roomID}
	if opts.Width > 0 {
		args["width"] = opts.Width
	}
	if opts.Height > 0 {
		args["height"] = opts.Height
	}
	if opts.Mimetype != "" {
		args["mimetype"] = opts.Mimetype
	}
	ev, err := r.Do(ctx, "sendImage", map[string]any{"args": args})
	if err != nil {
		return SentImage{}, err
	}
	var out struct {
		Result SentImage `json:"result"`
	}
	if err := ev.Decode(&out); err != nil {
		return SentImage{}, fmt.Errorf("decode sendImage reply: %w", err)
	}
	return out.Result, nil
}
