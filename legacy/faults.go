package legacy

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ServiceFaults is the failure injected into one fake downstream service.
// The zero value injects nothing.
type ServiceFaults struct {
	// Down makes the service answer 503 to every call, at once.
	Down bool
	// Latency delays every call that is not refused by Down; the delay ends
	// early when the caller goes away.
	Latency time.Duration
	// ErrorRate is the probability, in [0, 1], that a call answers 500
	// without doing anything (after Latency).
	ErrorRate float64
}

// Faults is the failure injection of all fake downstream services. It is
// set at start (DownstreamOptions.Faults, legacyorders flags) and at run
// time (Downstream.SetFaults, PUT /_control).
type Faults struct {
	Inventory ServiceFaults `json:"inventory"`
	Payments  ServiceFaults `json:"payments"`
	Warehouse ServiceFaults `json:"warehouse"`
	Mail      ServiceFaults `json:"mail"`
}

// Validate reports every out-of-range value, each named by its JSON path
// (payments.error_rate).
func (f Faults) Validate() error {
	var errs []error
	for _, s := range f.services() {
		if s.faults.Latency < 0 {
			errs = append(errs, fmt.Errorf("%s.latency: must not be negative, got %s", s.name, s.faults.Latency))
		}
		// The negated form also rejects NaN.
		if !(s.faults.ErrorRate >= 0 && s.faults.ErrorRate <= 1) {
			errs = append(errs, fmt.Errorf("%s.error_rate: must be between 0 and 1, got %g", s.name, s.faults.ErrorRate))
		}
	}
	return errors.Join(errs...)
}

type namedFaults struct {
	name   string
	faults *ServiceFaults
}

// services lists the services under their JSON names, so that validation
// and patching walk them in one place.
func (f *Faults) services() []namedFaults {
	return []namedFaults{
		{"inventory", &f.Inventory},
		{"payments", &f.Payments},
		{"warehouse", &f.Warehouse},
		{"mail", &f.Mail},
	}
}

// serviceFaultsJSON is the wire form: latency as a Go duration string
// ("250ms"), which is what operators type on the command line too.
type serviceFaultsJSON struct {
	Down      bool    `json:"down"`
	Latency   string  `json:"latency"`
	ErrorRate float64 `json:"error_rate"`
}

// MarshalJSON encodes the faults as {"down":..,"latency":"250ms","error_rate":..}.
func (s ServiceFaults) MarshalJSON() ([]byte, error) {
	return json.Marshal(serviceFaultsJSON{Down: s.Down, Latency: s.Latency.String(), ErrorRate: s.ErrorRate})
}

// UnmarshalJSON decodes the form MarshalJSON writes; a missing latency means
// none.
func (s *ServiceFaults) UnmarshalJSON(data []byte) error {
	var w serviceFaultsJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	var latency time.Duration
	if w.Latency != "" {
		var err error
		if latency, err = time.ParseDuration(w.Latency); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	*s = ServiceFaults{Down: w.Down, Latency: latency, ErrorRate: w.ErrorRate}
	return nil
}

// faultsPatch is the body of PUT /_control: only the services and fields
// present change, so that a test can take the warehouse down without
// restating every other setting.
type faultsPatch struct {
	Inventory *serviceFaultsPatch `json:"inventory"`
	Payments  *serviceFaultsPatch `json:"payments"`
	Warehouse *serviceFaultsPatch `json:"warehouse"`
	Mail      *serviceFaultsPatch `json:"mail"`
}

type serviceFaultsPatch struct {
	Down      *bool    `json:"down"`
	Latency   *string  `json:"latency"`
	ErrorRate *float64 `json:"error_rate"`
}

// apply returns f with the patch applied, or every error of the patch.
func (p faultsPatch) apply(f Faults) (Faults, error) {
	patches := []*serviceFaultsPatch{p.Inventory, p.Payments, p.Warehouse, p.Mail}
	var errs []error
	for i, s := range f.services() {
		sp := patches[i]
		if sp == nil {
			continue
		}
		if sp.Down != nil {
			s.faults.Down = *sp.Down
		}
		if sp.Latency != nil {
			d, err := time.ParseDuration(*sp.Latency)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.latency: %w", s.name, err))
			}
			s.faults.Latency = d
		}
		if sp.ErrorRate != nil {
			s.faults.ErrorRate = *sp.ErrorRate
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Faults{}, err
	}
	if err := f.Validate(); err != nil {
		return Faults{}, err
	}
	return f, nil
}
