package dkim

// Rotation is filled in below.
type Rotation struct{}

// Signers returns the keys that sign now; a nil Rotation lets every key sign.
func (r *Rotation) Signers(keys []*Key) []*Key { return keys }
